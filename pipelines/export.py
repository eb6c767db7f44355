"""`curate export`: labeled documents to leak-free train/dev/test files, a manifest and a data card, versioned.

Steps: read the labeled documents (masked text) and their votes -> training labels (`curation.consensus`) ->
optional filters (agreement, open label issues) -> groups (duplicates, near-duplicates, group keys) -> splits (stable
hash + balancing, or by time) -> leak check (refuses to write on any leak) -> version (content hash of the rows) ->
files written into `OUT/.tmp-<version>-<pid>` and renamed to `OUT/<version>`, then `OUT/latest` repointed.

Why versions are content hashes: re-exporting unchanged data gives the same version (nothing is rewritten), every
version stays on disk beside the others, and `diff_versions` tells what changed between two of them.
Why the previous version anchors the next: documents already exported keep their split even where balancing would
have placed them differently today, so test sets don't churn as documents arrive (`fresh=True` starts over).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from curation.config import check_domain
from curation.consensus import consensus_labels
from curation.errors import ExportError, InputError
from curation.splits import (
    SPLITS,
    SplitAssignment,
    assign_splits,
    balance_of_counts,
    check_leaks,
    document_keys,
    group_documents,
    normalize_texts,
    parse_split,
    split_label_counts,
    time_splits,
)
from store import exports as export_store
from store.engine import Store
from store.runs import finish_run, start_run

__all__ = [
    "FORMATS",
    "SCHEMA",
    "ASSIGNMENTS_FILE",
    "export_dataset",
    "diff_versions",
    "list_versions",
    "resolve_version",
    "read_assignments",
    "read_split",
]

FORMATS: tuple[str, ...] = ("parquet", "jsonl", "csv", "hf")
ASSIGNMENTS_FILE = "assignments.parquet"
_EXT = {"parquet": "parquet", "hf": "parquet", "jsonl": "jsonl", "csv": "csv"}
_HF_SPLIT = {"train": "train", "dev": "validation", "test": "test"}

#: Columns of every split file, in this order.
SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("external_id", pa.string()),
    pa.field("text", pa.string(), nullable=False),
    pa.field("label", pa.string()),
    pa.field("label_source", pa.string()),
    pa.field("agreement", pa.float64()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("group", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("domain", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
])
_ASSIGN_SCHEMA = pa.schema([SCHEMA.field(n) for n in
                            ("id", "domain", "content_hash", "group", "label", "label_source", "split")])
_ROW_GROUP = 100_000


class _Stages:
    """Seconds per step, reported with the result (the benchmark shows where time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Any:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 3)


def export_dataset(
    store: Store,
    *,
    out: Path | str,
    split: str = "80/10/10",
    fmt: str = "parquet",
    domain: str | None = None,
    source: str | None = None,
    seed: int = 13,
    min_agreement: float | None = None,
    exclude_issues: bool = False,
    time_split: str | None = None,
    include_unlabeled: bool = False,
    fresh: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export the store's labeled documents into `out/<version>/`; returns the summary (see module doc).

    Raises `ExportError` (nothing written) when no document matches or the leak check finds a pair across splits.
    """
    t0 = time.perf_counter()
    ratios = parse_split(split)
    if fmt not in FORMATS:
        raise InputError(f"Unknown export format {fmt!r}.", hint=f"use one of: {', '.join(FORMATS)}")
    if domain:
        check_domain(domain)
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise InputError(f"--min-agreement {min_agreement} is outside 0..1.", hint="e.g. --min-agreement 0.67")
    root = Path(out)
    params = {"out": str(root.resolve()), "split": split, "format": fmt, "domain": domain, "source": source,
              "seed": seed, "min_agreement": min_agreement, "exclude_issues": exclude_issues,
              "time_split": time_split, "include_unlabeled": include_unlabeled, "fresh": fresh}
    run_id = start_run(store, kind="export", params=params)
    stages = _Stages()

    def stage(name: str) -> Any:
        if on_stage:
            on_stage(name)
        return stages(name)

    try:
        with stage("load"):
            docs, votes, keys = export_store.export_inputs(store, domain=domain, source=source,
                                                           labeled_only=not include_unlabeled, time_key=time_split)
        with stage("labels"):
            frame, excluded = _labeled_rows(store, docs, votes, domain=domain, min_agreement=min_agreement,
                                            exclude_issues=exclude_issues, include_unlabeled=include_unlabeled)
            del docs, votes
        if frame.empty:
            raise ExportError(
                "No documents to export" + (f" in domain {domain!r}" if domain else "")
                + (f" from source {source!r}" if source else "") + f" (excluded: {excluded}).",
                hint="ingest files with a label column, pull labels from Label Studio, or loosen the filters",
            )
        # The leak check's text normalization (Arrow, outside the GIL) runs beside grouping and assignment.
        helper = ThreadPoolExecutor(max_workers=1)
        normalized = helper.submit(normalize_texts, frame["text"])
        helper.shutdown(wait=False)
        with stage("group"):
            links = document_keys(frame, keys)
            frame["group"] = group_documents(frame, keys=links)
        anchor: dict[str, Any] = {"anchored_on": None}
        with stage("assign"):
            if time_split:
                frame["time"] = _parse_times(frame, time_split)
                assignment = time_splits(frame, ratios=ratios)
            else:
                previous = None
                if not fresh:
                    previous, anchor = _anchor(root, frame, ratios=ratios, seed=seed)
                assignment = assign_splits(frame, ratios=ratios, seed=seed, previous=previous)
            frame["split"] = pd.Categorical(assignment.split, categories=list(SPLITS))
        with stage("leak_check"):
            leaks = check_leaks(frame, keys=links, texts=normalized.result())
        if leaks["total"]:
            raise ExportError(_leak_message(leaks), hint="nothing was written; this points at inconsistent "
                              "content hashes or cluster ids in the store: re-ingest the sources, and report it")
        with stage("version"):
            if not frame["id"].is_monotonic_increasing:
                frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
            table = _table(frame)
            version = _version(table, fmt)
        target = root / version
        existed = (target / "manifest.json").is_file()
        files: dict[str, Any] = {}
        manifest: dict[str, Any]
        with stage("summary"):
            summary = _summary(frame, assignment, ratios)
            if existed:
                manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
                files = manifest.get("files", {})
            else:
                manifest = _manifest(store, frame, version=version, fmt=fmt, split=split, ratios=ratios, seed=seed,
                                     params=params, summary=summary, leaks=leaks, excluded=excluded, anchor=anchor,
                                     assignment=assignment, run_id=run_id, domain=domain,
                                     mode="time" if time_split else "hash")
        if not existed:
            with stage("write"):
                files, existed = _write_version(root, version, table, fmt=fmt, manifest=manifest)
        with stage("record"):
            _point_latest(root, version)
            export_store.record_export_version(store, version=version, out=str(target.resolve()),
                                               manifest=manifest, run_id=run_id)
        result = {
            "version": version,
            "out": str(target.resolve()),
            "root": str(root.resolve()),
            "format": fmt,
            "existed": existed,
            "rows": summary["rows"],
            "leaks": {k: v for k, v in leaks.items() if k != "examples"},
            "labels": summary["counts"],
            "label_balance_max_deviation_points": summary["label_balance"]["max_deviation_points"],
            "groups": assignment.groups,
            "largest_group": summary["largest_group"],
            "mode": "time" if time_split else "hash",
            **anchor,
            "pinned_documents": assignment.pinned_documents,
            "moved_documents": assignment.moved_documents,
            "balanced_documents": assignment.balanced_documents,
            "excluded": excluded,
            "warnings": summary["warnings"],
            "files": files,
            "run_id": run_id,
            "stage_seconds": stages.seconds,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    except BaseException as exc:
        finish_run(store, run_id, status="failed", stats={"stage_seconds": stages.seconds},
                   error=f"{type(exc).__name__}: {exc}")
        raise
    finish_run(store, run_id, status="ok", stats={k: v for k, v in result.items() if k != "files"})
    return result


def _labeled_rows(
    store: Store,
    docs: pd.DataFrame,
    votes: pd.DataFrame,
    *,
    domain: str | None,
    min_agreement: float | None,
    exclude_issues: bool,
    include_unlabeled: bool,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Documents joined to their training label, minus low-agreement and open-issue documents."""
    from curation.label_quality import apply_crowdlab
    from store.audit import crowdlab_labels

    # The same training label as `curation.consensus.training_labels`: CROWDLAB where an audit stored one.
    labels = apply_crowdlab(consensus_labels(votes), votes, crowdlab_labels(store, domain=domain))
    excluded = {"low_agreement": 0, "label_issues": 0}
    if min_agreement is not None and not labels.empty:
        low = labels["agreement"] < min_agreement
        excluded["low_agreement"] = int(low.sum())
        drop_ids = labels.loc[low, "document_id"].to_numpy()
        labels = labels.loc[~low]
        docs = docs.loc[~docs["id"].isin(drop_ids)]
    # Both sides come sorted by id: align by binary search instead of a merge (a million rows, many columns).
    lab_ids = labels["document_id"].to_numpy(dtype=np.int64)
    doc_ids = docs["id"].to_numpy(dtype=np.int64)
    at = np.minimum(np.searchsorted(lab_ids, doc_ids), max(len(lab_ids) - 1, 0))
    hit = (lab_ids[at] == doc_ids) if len(lab_ids) else np.zeros(len(doc_ids), dtype=bool)
    if not include_unlabeled:
        docs, at, hit = docs.loc[hit], at[hit], hit[hit]
    frame = docs.reset_index(drop=True)
    for col in ("label", "label_source", "agreement"):
        values = labels[col].to_numpy()[at] if len(lab_ids) else np.full(len(frame), None)
        frame[col] = pd.Series(values, dtype=object if col != "agreement" else np.float64).where(hit, None)
    if exclude_issues:
        issues = export_store.open_label_issue_ids(store, domain=domain)
        hit = frame["id"].isin(issues)
        excluded["label_issues"] = int(hit.sum())
        frame = frame.loc[~hit]
    return frame.reset_index(drop=True), excluded


def _parse_times(frame: pd.DataFrame, key: str) -> pd.Series:
    raw = frame["time"]
    times = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
    bad = times.isna()
    if bad.any():
        examples = frame.loc[bad, "id"].head(5).tolist()
        raise ExportError(
            f"--time-split {key}: {int(bad.sum())} of {len(frame)} documents have no readable time "
            f"(document ids {examples}; values like {raw[bad].head(3).tolist()}).",
            hint="use `created_at` or a meta key every document has (see `curate docs --json`), or leave out "
                 "--time-split",
        )
    return times


def _read_manifest(version_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _anchor(
    root: Path, frame: pd.DataFrame, *, ratios: tuple[float, float, float], seed: int
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Previous split of each row, from the latest version in `root` made with the same seed and ratios."""
    latest = _latest_name(root)
    info: dict[str, Any] = {"anchored_on": None}
    if latest is None:
        return None, info
    manifest = _read_manifest(root / latest)
    if manifest is None or not (root / latest / ASSIGNMENTS_FILE).is_file():
        info["anchor_skipped"] = f"{latest} has no manifest or assignments"
        return None, info
    same = (manifest.get("mode") == "hash" and manifest.get("seed") == seed
            and np.allclose(manifest.get("ratios", []), ratios))
    if not same:
        info["anchor_skipped"] = f"{latest} used another seed, split or mode"
        return None, info
    prev = pq.read_table(root / latest / ASSIGNMENTS_FILE, columns=["domain", "content_hash", "split"]).to_pandas()
    merged = frame[["domain", "content_hash"]].merge(prev, on=["domain", "content_hash"], how="left", sort=False)
    info["anchored_on"] = latest
    return merged["split"].to_numpy(dtype=object), info


def _leak_message(leaks: dict[str, Any]) -> str:
    parts = ", ".join(f"{k.replace('_', ' ')}: {leaks[k]}" for k in ("exact", "near_duplicate", "group_key", "text"))
    ex = "; ".join(
        f"{e['kind'].replace('_', ' ')}: " + ", ".join(f"document {d['id']} in {d['split']}" for d in e["documents"])
        for e in leaks["examples"][:3]
    )
    return f"Export refused: {leaks['total']} document pairs would straddle splits ({parts}). Examples: {ex}."


def _table(frame: pd.DataFrame) -> pa.Table:
    """The rows as an Arrow table with exactly `SCHEMA` (what every format writes)."""
    cols = []
    for f in SCHEMA:
        col = frame[f.name]
        arr = pa.chunked_array([pa.array(col.to_numpy(dtype=object), from_pandas=True)]) if col.dtype == object \
            else pa.Table.from_pandas(frame[[f.name]], preserve_index=False).column(0)
        cols.append(arr.cast(f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def _version(table: pa.Table, fmt: str) -> str:
    """First 12 hex of SHA-256 over the format and every exported value, rows in id order.

    Hashes canonical streams (null flags, then value lengths and bytes, or fixed-width values), so the same rows
    give the same version however Arrow chunked them.
    """
    h = hashlib.sha256(f"curate-export-v1\x1e{fmt}\x1e{','.join(SCHEMA.names)}\x1e".encode())
    for f in SCHEMA:
        col = table.column(f.name)
        h.update(pc.is_null(col).to_numpy().tobytes())
        for chunk in col.chunks:
            if pa.types.is_string(f.type):
                chunk = pc.fill_null(chunk, "")
                offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset: chunk.offset + len(chunk) + 1]
                h.update(np.diff(offsets).astype(np.int32).tobytes())
                h.update(memoryview(chunk.buffers()[2])[offsets[0]: offsets[-1]] if len(chunk) else b"")
            else:
                h.update(pc.fill_null(chunk, 0).to_numpy().tobytes())
        h.update(b"\x1e")
    return h.hexdigest()[:12]


def _summary(frame: pd.DataFrame, assignment: SplitAssignment, ratios: tuple[float, float, float]) -> dict[str, Any]:
    table = split_label_counts(frame["split"], frame["label"])
    rows = {s: int(n) for s, n in zip(SPLITS, np.bincount(frame["split"].cat.codes, minlength=3), strict=True)}
    unlabeled = {s: rows[s] - int(table[s].sum()) for s in SPLITS}
    counts = {s: {**{str(k): int(v) for k, v in table[s].items() if v},
                  **({"(unlabeled)": unlabeled[s]} if unlabeled[s] else {})} for s in SPLITS if rows[s]}
    sizes = np.bincount(frame["group"].cat.codes.to_numpy()) if len(frame) else np.zeros(1, dtype=np.int64)
    largest = int(sizes.max())
    warnings: list[str] = []
    smallest = min(r for r in ratios if r > 0) * len(frame)
    if largest > smallest / 2 and len(frame) >= 100:
        name = frame["group"].cat.categories[int(sizes.argmax())]
        warnings.append(f"group {name} holds {largest} of {len(frame)} documents: splits cannot meet the ratios; "
                        "check the group key")
    return {"rows": rows, "counts": counts, "largest_group": largest, "warnings": warnings,
            "labels": {str(k): int(v) for k, v in table.sum(axis=1).items()},
            "label_balance": balance_of_counts(table),
            "label_sources": {str(k): int(v) for k, v in frame["label_source"].value_counts().items()}}


def _git_revision() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return None
    rev = res.stdout.strip()
    return rev if res.returncode == 0 and rev else None


def _tool_version() -> str | None:
    try:
        return metadata.version("curate")
    except metadata.PackageNotFoundError:
        return None


def _manifest(
    store: Store,
    frame: pd.DataFrame,
    *,
    version: str,
    fmt: str,
    split: str,
    ratios: tuple[float, float, float],
    seed: int,
    params: dict[str, Any],
    summary: dict[str, Any],
    leaks: dict[str, Any],
    excluded: dict[str, int],
    anchor: dict[str, Any],
    assignment: SplitAssignment,
    run_id: int,
    domain: str | None,
    mode: str,
) -> dict[str, Any]:
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": fmt,
        "rows": summary["rows"],
        "total_rows": len(frame),
        "counts": summary["counts"],
        "labels": summary["labels"],
        "label_sources": summary["label_sources"],
        "label_balance": summary["label_balance"],
        "groups": assignment.groups,
        "largest_group": summary["largest_group"],
        "warnings": summary["warnings"],
        "split": split,
        "ratios": list(ratios),
        "seed": seed,
        "mode": mode,
        "assignment": {**anchor, "pinned_documents": assignment.pinned_documents,
                       "moved_documents": assignment.moved_documents,
                       "balanced_documents": assignment.balanced_documents, **assignment.stats},
        "leaks": {k: v for k, v in leaks.items() if k != "examples"},
        "excluded": excluded,
        "config": {k: v for k, v in params.items() if k != "out"},
        "tool": {"name": "curate", "version": _tool_version(), "git_revision": _git_revision()},
        "model_versions": export_store.model_versions_used(store, domain=domain),
        "store": store.display_url,
        "run_id": run_id,
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in SCHEMA],
        "files": {},
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_split(table: pa.Table, path: Path, fmt: str) -> None:
    if fmt in ("parquet", "hf"):
        pq.write_table(table, path, compression="zstd", row_group_size=_ROW_GROUP)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        table.to_pandas().to_json(path, orient="records", lines=True, force_ascii=False)


def _write_version(
    root: Path, version: str, table: pa.Table, *, fmt: str, manifest: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Write every file into a temporary folder and rename it into place; (files, existed meanwhile)."""
    root.mkdir(parents=True, exist_ok=True)
    target = root / version
    tmp = root / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        parts = [(name, table.filter(pc.equal(table.column("split"), name))) for name in SPLITS]
        parts = [(name, part) for name, part in parts if part.num_rows]

        def write(name: str, part: pa.Table) -> dict[str, Any]:
            path = tmp / f"{name}.{_EXT[fmt]}"
            _write_split(part, path, fmt)
            return {"path": path.name, "rows": part.num_rows, "bytes": path.stat().st_size, "sha256": _sha256(path)}

        # Parquet encoding and compression release the GIL: the files are written side by side.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            assigned = pool.submit(pq.write_table, table.select(_ASSIGN_SCHEMA.names), tmp / ASSIGNMENTS_FILE,
                                   compression="zstd")
            futures = {name: pool.submit(write, name, part) for name, part in parts}
            files: dict[str, Any] = {name: f.result() for name, f in futures.items()}
            assigned.result()
        manifest["files"] = files
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n",
                                           encoding="utf-8")
        (tmp / "README.md").write_text(_data_card(manifest), encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if (target / "manifest.json").is_file():  # another export wrote the same version meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                return json.loads((target / "manifest.json").read_text(encoding="utf-8"))["files"], True
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files, False


def _point_latest(root: Path, version: str) -> None:
    """`root/latest` -> the version folder: a relative symlink, swapped atomically (a text file where links fail)."""
    link = root / "latest"
    tmp = root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(version, tmp, target_is_directory=True)
    except OSError:
        tmp.write_text(version + "\n", encoding="utf-8")
    if link.is_dir() and not link.is_symlink():
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{link} is a real folder, not the pointer to the latest version.",
                          hint="move it away; `latest` is managed by curate export")
    os.replace(tmp, link)


def _latest_name(root: Path) -> str | None:
    link = root / "latest"
    if link.is_symlink():
        name = os.readlink(link)
    elif link.is_file():
        name = link.read_text(encoding="utf-8").strip()
    else:
        return None
    name = Path(name).name
    return name if (root / name).is_dir() else None


def list_versions(out: Path | str) -> list[dict[str, Any]]:
    """Versions under `out`, oldest first: version, created_at, rows, format, latest."""
    root = Path(out)
    latest = _latest_name(root) if root.is_dir() else None
    found = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.is_symlink() or not d.is_dir() or d.name.startswith("."):
            continue
        m = _read_manifest(d)
        if m is None:
            continue
        found.append({"version": d.name, "created_at": m.get("created_at"), "rows": m.get("rows"),
                      "format": m.get("format"), "latest": d.name == latest})
    return sorted(found, key=lambda v: (str(v["created_at"]), v["version"]))


def resolve_version(out: Path | str, ref: str) -> Path:
    """A version folder from a version name under `out`, `latest`, or a path to a version folder."""
    root = Path(out)
    candidates = [Path(ref)] if Path(ref).is_absolute() or os.sep in ref else []
    name = _latest_name(root) if ref == "latest" else ref
    if name:
        candidates.append(root / name)
    for c in candidates:
        if (c / ASSIGNMENTS_FILE).is_file():
            return c
    known = [v["version"] for v in list_versions(root)]
    raise InputError(f"No export version {ref!r} under {root}.",
                     hint=f"known versions: {', '.join(known[-10:]) or 'none'}; or pass a version folder's path")


def read_assignments(version_dir: Path | str) -> pd.DataFrame:
    """id, domain, content_hash, group, label, label_source, split of every row of a version."""
    return pq.read_table(Path(version_dir) / ASSIGNMENTS_FILE).to_pandas()


def read_split(version_dir: Path | str, name: str) -> pd.DataFrame:
    """One split file of a version, whatever its format (empty frame when the split is empty)."""
    d = Path(version_dir)
    m = _read_manifest(d) or {}
    info = m.get("files", {}).get(name)
    if info is None:
        return pd.DataFrame({f.name: [] for f in SCHEMA})
    path = d / info["path"]
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".csv":
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=SCHEMA)).to_pandas()
    return pd.read_json(path, lines=True, dtype={f.name: object for f in SCHEMA if f.name != "agreement"})


def diff_versions(out: Path | str, old: str, new: str, *, limit: int | None = None) -> dict[str, Any]:
    """Documents added, removed, relabeled and moved to another split between two versions.

    Documents are matched by (domain, content_hash), so versions from different stores compare by content.
    """
    a_dir, b_dir = resolve_version(out, old), resolve_version(out, new)
    a, b = read_assignments(a_dir), read_assignments(b_dir)
    m = a.merge(b, on=["domain", "content_hash"], how="outer", suffixes=("_old", "_new"), indicator=True)
    added = m[m["_merge"] == "right_only"]
    removed = m[m["_merge"] == "left_only"]
    both = m[m["_merge"] == "both"]
    old_lab = both["label_old"].astype(object).where(both["label_old"].notna(), None)
    new_lab = both["label_new"].astype(object).where(both["label_new"].notna(), None)
    relabeled = both[old_lab.to_numpy() != new_lab.to_numpy()]
    moved = both[both["split_old"].to_numpy(dtype=object) != both["split_new"].to_numpy(dtype=object)]

    def ids(frame: pd.DataFrame, col: str) -> list[int]:
        return sorted(int(x) for x in frame[col])[:limit]

    def changes(frame: pd.DataFrame, what: str) -> list[dict[str, Any]]:
        rows = frame.sort_values("id_new")
        if limit is not None:
            rows = rows.head(limit)
        return [{"id": int(i), "from": f, "to": t}
                for i, f, t in zip(rows["id_new"], rows[f"{what}_old"], rows[f"{what}_new"], strict=True)]

    return {
        "from": a_dir.name,
        "to": b_dir.name,
        "added": len(added),
        "removed": len(removed),
        "relabeled": len(relabeled),
        "moved": len(moved),
        "unchanged": int(len(both) - len(set(relabeled.index) | set(moved.index))),
        "documents": {
            "added": ids(added, "id_new"),
            "removed": ids(removed, "id_old"),
            "relabeled": changes(relabeled, "label"),
            "moved": changes(moved, "split"),
        },
    }


def _data_card(m: dict[str, Any]) -> str:
    """README.md: what the data is, how it was split, how to load it (with Hub front matter for `hf`)."""
    lines: list[str] = []
    files = m.get("files", {})
    if m["format"] == "hf":
        lines += ["---", "configs:", "- config_name: default", "  data_files:"]
        for name, info in files.items():
            lines += [f"  - split: {_HF_SPLIT[name]}", f"    path: {info['path']}"]
        lines += ["dataset_info:", "  features:"]
        for f in SCHEMA:
            dtype = {"int64": "int64", "double": "float64"}.get(str(f.type), "string")
            lines += [f"  - name: {f.name}", f"    dtype: {dtype}"]
        lines += ["  splits:"]
        for name, info in files.items():
            lines += [f"  - name: {_HF_SPLIT[name]}", f"    num_examples: {info['rows']}"]
        lines += ["---", ""]
    cfg = m["config"]
    scope = ", ".join(f"{k} {cfg[k]}" for k in ("domain", "source") if cfg.get(k)) or "all domains and sources"
    lines += [
        f"# Dataset {m['version']}",
        "",
        f"Labeled documents exported by `curate export` ({m['tool']['name']} {m['tool']['version']}, git "
        f"{m['tool']['git_revision'] or 'unknown'}) on {m['created_at']}; {scope}. Text is PII-masked.",
        "",
        "| split | file | rows |",
        "|---|---|---|",
    ]
    for name, info in files.items():
        lines.append(f"| {name} | `{info['path']}` | {info['rows']} |")
    labels = sorted(m["labels"])
    lines += ["", "Documents per label and split:", "", "| label | " + " | ".join(files) + " | all |",
              "|---|" + "---|" * (len(files) + 1)]
    for lab in labels:
        lines.append(f"| {lab} | " + " | ".join(str(m["counts"].get(s, {}).get(lab, 0)) for s in files)
                     + f" | {m['labels'][lab]} |")
    src = ", ".join(f"{k} {v}" for k, v in m["label_sources"].items())
    how = (f"by time: groups ordered by their newest `{cfg['time_split']}`, oldest {m['split']} "
           "(train/dev/test)") if m["mode"] == "time" else (
        f"{m['split']} (train/dev/test) by a hash of each group and seed {m['seed']}, then balanced per label "
        f"(largest gap between a label's share in a split and overall: "
        f"{m['label_balance']['max_deviation_points']} points)")
    a = m["assignment"]
    lines += [
        "",
        "## How it was made",
        "",
        f"- Labels: the training label of each document ({src}): a review wins, else the majority of its "
        "annotations (imported labels count as votes)"
        + (f"; documents with agreement below {cfg['min_agreement']} left out" if cfg.get("min_agreement") else "")
        + ("; documents with an open label issue left out" if cfg.get("exclude_issues") else "") + ".",
        f"- Groups: exact duplicates, near-duplicate clusters and group keys never straddle splits "
        f"({m['groups']} groups, the largest {m['largest_group']} documents).",
        f"- Split: {how}.",
        f"- Stability: anchored on version {a.get('anchored_on') or '(none)'}; {a.get('moved_documents', 0)} "
        "previously exported documents changed split." if m["mode"] == "hash" else
        "- Stability: a time split moves its boundaries as newer documents arrive.",
        f"- Leak check: exact {m['leaks']['exact']}, near-duplicate {m['leaks']['near_duplicate']}, group key "
        f"{m['leaks']['group_key']}, same text {m['leaks']['text']} pairs across splits.",
        f"- Model versions used in labeling: {', '.join(m['model_versions']) or 'none'}.",
        "",
        "## Columns",
        "",
        "`id` store document id, `external_id` id in the source file, `text` masked text, `label`, `label_source` "
        "(reviewed / consensus / imported), `agreement` share of votes for the label, `split`, `group` (documents "
        "that must stay together), `source`, `domain`, `content_hash`.",
        "",
        "## Loading",
        "",
    ]
    if m["format"] in ("parquet", "hf"):
        lines += ["```python", "import pandas as pd", "train = pd.read_parquet(\"train.parquet\")",
                  "# or: datasets.load_dataset(\"parquet\", data_files={\"train\": \"train.parquet\", "
                  "\"validation\": \"dev.parquet\", \"test\": \"test.parquet\"})", "```"]
    elif m["format"] == "jsonl":
        lines += ["```python", "import pandas as pd", "train = pd.read_json(\"train.jsonl\", lines=True)", "```"]
    else:
        lines += ["```python", "import pandas as pd", "train = pd.read_csv(\"train.csv\", keep_default_na=False)",
                  "```"]
    if m["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in m["warnings"]]
    return "\n".join(lines) + "\n"
