"""`curate export` end to end: files, manifest, versions, stability, leak refusal, filters, formats, diff, CLI.

Small synthetic stores run on both backends; the real-data tests ingest the airline tweets once (oldest 90% first,
then the newest 10%) into SQLite and export from there.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import ExportError
from pipelines.export import SCHEMA, diff_versions, export_dataset, list_versions, read_assignments, read_split
from store import documents as ds
from store.engine import insert_ignore, open_store
from store.exports import list_export_versions
from store.models import Annotation, LabelIssue
from store.runs import list_runs, start_run
from tests.conftest import shared_data

SPLIT_NAMES = ("train", "dev", "test")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.casefold()).strip()


def _add_docs(store: Any, docs: Sequence[dict[str, Any]], *, source: str = "tickets.csv",
              domain: str = "customer_service", hash_of: Any = None) -> list[int]:
    """Insert documents as ingest would: one per text, an occurrence (and imported label) per input row.

    Each doc: text, rows [(label or None, group_key or None)], optional cluster (index of another doc in `docs`)
    and meta. `hash_of` overrides the content hash (to fake an upstream bug).
    """
    sid = ds.ensure_source(store, name=source, domain=domain, path=None)
    with store.connect() as conn:
        start = conn.exec_driver_sql("SELECT COALESCE(MAX(row_number), -1) + 1 FROM occurrences WHERE source_id = "
                                     f"{sid}").scalar()
        rows = [{"domain": domain, "source_id": sid, "row_number": start + i, "external_id": f"X{start + i}",
                 "group_key": d["rows"][0][1], "raw_text": d["text"], "text": d["text"],
                 "content_hash": (hash_of or (lambda t: hashlib.sha1(_norm(t).encode()).hexdigest()))(d["text"]),
                 "n_tokens": len(d["text"].split()), "n_sentences": 1, "meta": d.get("meta")}
                for i, d in enumerate(docs)]
        got, _ = ds.insert_documents(conn, rows)
        ids = [got[r["content_hash"]] for r in rows]
        ds.set_clusters(conn, ids, [ids[d["cluster"]] if d.get("cluster") is not None else i
                                    for i, d in zip(ids, docs, strict=True)])
        occ, row = [], start + len(docs)
        for doc_id, d in zip(ids, docs, strict=True):
            for label, key in d["rows"]:
                occ.append({"source_id": sid, "row_number": row, "document_id": doc_id, "external_id": None,
                            "group_key": key, "is_duplicate": False, "label": label})
                row += 1
        occ_ids = ds.insert_occurrences(conn, [{k: v for k, v in o.items() if k != "label"} for o in occ])
        ds.insert_import_annotations(conn, [{
            "document_id": o["document_id"], "annotator": f"import:{source}", "label": o["label"],
            "labels": [o["label"]], "origin": "import", "occurrence_id": occ_ids[o["row_number"]]}
            for o in occ if o["label"] is not None])
    return ids


def _synthetic(n: int = 400, seed: int = 0, prefix: str = "ticket") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["refund", "delay", "card"], p=[0.5, 0.3, 0.2], size=n)
    docs: list[dict[str, Any]] = []
    for i in range(n):
        key = f"cust{rng.integers(0, n // 3)}" if rng.random() < 0.7 else None
        doc: dict[str, Any] = {"text": f"{prefix} {i} about {labels[i]} {rng.integers(0, 10**6)}",
                               "rows": [(str(labels[i]), key)]}
        if i > 10 and rng.random() < 0.05:
            doc["cluster"] = int(rng.integers(0, i))
        if rng.random() < 0.05:  # a repeated row under another customer, sometimes with a conflicting label
            doc["rows"].append((str(rng.choice(["refund", "delay", "card"])), f"cust{rng.integers(0, n // 3)}"))
        docs.append(doc)
    return docs


def _all_rows(version_dir: str | Path) -> pd.DataFrame:
    return pd.concat([read_split(version_dir, s) for s in SPLIT_NAMES], ignore_index=True)


def test_export_writes_a_versioned_leak_free_dataset(store, tmp_path: Path) -> None:
    ids = _add_docs(store, _synthetic())
    out = tmp_path / "exports"
    res = export_dataset(store, out=out, seed=7)
    assert {"version", "out", "rows", "leaks", "seconds"} <= set(res)
    assert res["leaks"]["total"] == 0 and not res["existed"]
    assert sum(res["rows"].values()) == len(ids)
    vdir = Path(res["out"])
    assert vdir == (out / res["version"]).resolve() and (out / "latest").resolve() == vdir
    assert sorted(p.name for p in vdir.iterdir()) == sorted(
        ["README.md", "assignments.parquet", "manifest.json", "train.parquet", "dev.parquet", "test.parquet"])
    assert pq.read_schema(vdir / "train.parquet").remove_metadata().equals(SCHEMA)
    rows = _all_rows(vdir)
    assert sorted(rows["id"]) == sorted(ids)
    assert (rows.groupby("group")["split"].nunique() == 1).all()
    manifest = json.loads((vdir / "manifest.json").read_text())
    assert manifest["version"] == res["version"] and manifest["seed"] == 7
    assert manifest["tool"]["name"] == "curate" and "git_revision" in manifest["tool"] and manifest["tool"]["version"]
    assert manifest["counts"]["train"] and manifest["model_versions"] == [] and manifest["created_at"]
    assert manifest["label_sources"] == {"imported": len(ids)}
    assert {s: manifest["files"][s]["rows"] for s in manifest["files"]} == {k: v for k, v in res["rows"].items() if v}
    assert f"# Dataset {res['version']}" in (vdir / "README.md").read_text()
    runs = list_runs(store, kind="export")
    assert runs[0]["status"] == "ok" and runs[0]["stats"]["version"] == res["version"]
    assert list_export_versions(store)[0]["version"] == res["version"]

    again = export_dataset(store, out=out, seed=7)
    assert again["existed"] and again["version"] == res["version"]
    assert [v["version"] for v in list_versions(out)] == [res["version"]]
    other = export_dataset(store, out=out, seed=8)
    assert other["version"] != res["version"] and len(list_versions(out)) == 2
    assert (out / res["version"] / "manifest.json").is_file()  # earlier versions are kept


def test_group_keys_of_every_occurrence_keep_documents_together(store, tmp_path: Path) -> None:
    docs = [{"text": f"doc {i}", "rows": [("a" if i % 2 else "b", f"k{i}")]} for i in range(60)]
    docs[5]["rows"].append(("a", "k40"))  # doc 5 also occurred under doc 40's key
    docs[7]["cluster"] = 50
    ids = _add_docs(store, docs)
    res = export_dataset(store, out=tmp_path, seed=3)
    split = read_assignments(res["out"]).set_index("id")["split"]
    assert split[ids[5]] == split[ids[40]] and split[ids[7]] == split[ids[50]]


def test_filters_agreement_issues_unlabeled_and_scope(store, tmp_path: Path) -> None:
    docs = [{**d, "rows": d["rows"][:1]} for d in _synthetic(60)]
    docs[0]["rows"] = [("refund", None), ("delay", None), ("refund", None)]  # agreement 2/3
    docs[1]["rows"] = [(None, None)]  # unlabeled
    ids = _add_docs(store, docs)
    fin = _add_docs(store, [{"text": "shares fall", "rows": [("negative", None)]}], source="news.csv",
                    domain="financial")
    run_id = start_run(store, kind="audit")
    with store.connect() as conn:
        insert_ignore(conn, LabelIssue.__table__, [
            {"run_id": run_id, "document_id": ids[2], "is_label_issue": True, "review_status": None},
            {"run_id": run_id, "document_id": ids[3], "is_label_issue": True, "review_status": "resolved"},
        ], conflict=["run_id", "document_id"])
    base = export_dataset(store, out=tmp_path / "a", domain="customer_service")
    assert sum(base["rows"].values()) == 59
    low = export_dataset(store, out=tmp_path / "b", domain="customer_service", min_agreement=0.9)
    assert low["excluded"]["low_agreement"] == 1 and sum(low["rows"].values()) == 58
    iss = export_dataset(store, out=tmp_path / "c", domain="customer_service", exclude_issues=True)
    assert iss["excluded"]["label_issues"] == 1
    assert ids[2] not in set(read_assignments(iss["out"])["id"]) and ids[3] in set(read_assignments(iss["out"])["id"])
    unl = export_dataset(store, out=tmp_path / "d", domain="customer_service", include_unlabeled=True)
    rows = read_assignments(unl["out"]).set_index("id")
    assert len(rows) == 60 and pd.isna(rows.loc[ids[1], "label"])
    both = export_dataset(store, out=tmp_path / "e")
    assert fin[0] in set(read_assignments(both["out"])["id"])
    only = export_dataset(store, out=tmp_path / "f", source="news.csv")
    assert list(read_assignments(only["out"])["id"]) == fin
    with pytest.raises(ExportError, match="No documents to export"):
        export_dataset(store, out=tmp_path / "g", source="missing.csv")


def test_a_leak_is_refused_and_nothing_is_written(store, tmp_path: Path) -> None:
    # Upstream bug: same text, different content hashes, so grouping cannot know they are duplicates.
    counter = iter(range(10**6))
    docs = [{"text": f"Same complaint number {i}", "rows": [("a", None)]} for i in range(40)]
    docs += [{"text": f"same   complaint NUMBER {i}", "rows": [("a", None)]} for i in range(40)]
    _add_docs(store, docs, hash_of=lambda t: hashlib.sha1(f"{t}{next(counter)}".encode()).hexdigest())
    out = tmp_path / "x"
    with pytest.raises(ExportError, match=r"Export refused: \d+ document pairs would straddle splits") as err:
        export_dataset(store, out=out)
    assert "text: " in str(err.value) and "Examples:" in str(err.value)
    assert not out.exists() or not any(out.iterdir())
    assert list_runs(store, kind="export")[0]["status"] == "failed"


def test_a_failed_write_leaves_no_version_behind(sqlite_url: str, tmp_path: Path, monkeypatch) -> None:
    import pipelines.export as pe

    store = open_store(sqlite_url)
    _add_docs(store, _synthetic(100))
    out = tmp_path / "out"
    first = export_dataset(store, out=out, seed=1)
    real = pe._write_split
    calls = []

    def failing(table, path, fmt):  # type: ignore[no-untyped-def]
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real(table, path, fmt)

    monkeypatch.setattr(pe, "_write_split", failing)
    with pytest.raises(OSError, match="disk full"):
        export_dataset(store, out=out, seed=2)
    assert sorted(p.name for p in out.iterdir()) == sorted([first["version"], "latest"])
    assert (out / "latest").resolve().name == first["version"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "hf"])
def test_formats_hold_the_same_rows(sqlite_url: str, tmp_path: Path, fmt: str) -> None:
    store = open_store(sqlite_url)
    docs = _synthetic(80)
    docs[0]["text"] = 'quotes " and, commas\nand a newline'
    _add_docs(store, docs)
    ref = _all_rows(export_dataset(store, out=tmp_path / "p", seed=4)["out"]).sort_values("id")
    res = export_dataset(store, out=tmp_path / fmt, fmt=fmt, seed=4)
    got = _all_rows(res["out"]).sort_values("id")
    assert res["version"] != export_dataset(store, out=tmp_path / "p", seed=4)["version"]
    for col in ("id", "text", "label", "split", "group", "content_hash"):
        assert got[col].astype(str).tolist() == ref[col].astype(str).tolist(), col
    if fmt == "hf":
        card = (Path(res["out"]) / "README.md").read_text()
        assert card.startswith("---\nconfigs:\n- config_name: default\n  data_files:\n")
        assert "  - split: validation\n    path: dev.parquet" in card


def test_hf_export_loads_with_datasets(sqlite_url: str, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    store = open_store(sqlite_url)
    _add_docs(store, _synthetic(120))
    res = export_dataset(store, out=tmp_path, fmt="hf", seed=4)
    vdir = Path(res["out"])
    files = {"train": str(vdir / "train.parquet"), "validation": str(vdir / "dev.parquet"),
             "test": str(vdir / "test.parquet")}
    ds_ = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert {k: ds_[k].num_rows for k in ds_} == {"train": res["rows"]["train"], "validation": res["rows"]["dev"],
                                                "test": res["rows"]["test"]}
    by_card = datasets.load_dataset(str(vdir), cache_dir=str(tmp_path / "cache2"))
    assert by_card["validation"].num_rows == res["rows"]["dev"]
    assert set(by_card["train"].column_names) == set(SCHEMA.names)


def test_diff_lists_added_removed_relabeled_and_moved(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    ids = _add_docs(store, _synthetic(100))
    tmp_path = tmp_path / "out"
    v1 = export_dataset(store, out=tmp_path, seed=5)
    with store.connect() as conn:
        insert_ignore(conn, Annotation.__table__, [{"document_id": ids[0], "annotator": "lead", "label": "other",
                                                    "origin": "review", "ls_annotation_id": 1}],
                      conflict=["ls_annotation_id"])
        conn.exec_driver_sql(f"UPDATE annotations SET deleted_at = CURRENT_TIMESTAMP WHERE document_id = {ids[1]}")
    new = _add_docs(store, [{"text": "brand new ticket", "rows": [("refund", None)]}])
    v2 = export_dataset(store, out=tmp_path, seed=5)
    d = diff_versions(tmp_path, v1["version"], "latest")
    assert (d["added"], d["removed"], d["relabeled"]) == (1, 1, 1)
    assert d["documents"]["added"] == new and d["documents"]["removed"] == [ids[1]]
    assert d["documents"]["relabeled"][0]["id"] == ids[0] and d["documents"]["relabeled"][0]["to"] == "other"
    assert d["moved"] == 0 and d["to"] == v2["version"]
    res = CliRunner().invoke(app, ["export", "--diff", v1["version"], v2["version"], "--out", str(tmp_path),
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["relabeled"] == 1
    bad = CliRunner().invoke(app, ["export", "--diff", v1["version"], "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_time_split_needs_a_time_for_every_document(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    docs = [{"text": f"t {i}", "rows": [("a", None)], "meta": {"when": f"2024-01-{i + 1:02d}"}} for i in range(20)]
    _add_docs(store, docs)
    res = export_dataset(store, out=tmp_path / "ok", time_split="when")
    rows = read_assignments(res["out"]).sort_values("id")
    assert list(rows["split"]) == ["train"] * 16 + ["dev"] * 2 + ["test"] * 2
    _add_docs(store, [{"text": "undated", "rows": [("a", None)]}], source="more.csv")
    with pytest.raises(ExportError, match="1 of 21 documents have no readable time"):
        export_dataset(store, out=tmp_path / "bad", time_split="when")


def test_cli_export_json(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    _add_docs(store, _synthetic(50))
    res = CliRunner().invoke(app, ["export", "--db", sqlite_url, "--out", str(tmp_path), "--split", "70/15/15",
                                   "--seed", "3", "--format", "jsonl", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert {"version", "out", "rows", "leaks", "seconds"} <= set(got)
    assert sum(got["rows"].values()) == 50 and got["leaks"]["total"] == 0
    assert (Path(got["out"]) / "train.jsonl").is_file()
    human = CliRunner().invoke(app, ["export", "--db", sqlite_url, "--out", str(tmp_path), "--split", "70/15/15",
                                     "--seed", "3", "--format", "jsonl"])
    assert human.exit_code == 0 and "already existed" in human.output
    bad = CliRunner().invoke(app, ["export", "--db", sqlite_url, "--out", str(tmp_path), "--split", "80/30/10"])
    assert bad.exit_code == 2 and "adds up to 120" in bad.output


def test_arrow_and_plain_reads_agree(sqlite_url: str) -> None:
    pytest.importorskip("adbc_driver_sqlite")
    from store import exports

    store = open_store(sqlite_url)
    docs = _synthetic(50)
    docs[3]["rows"] = [("refund", None)]
    _add_docs(store, docs)
    queries = [exports._documents_query(domain=None, source=None, labeled_only=True, time_key="created_at"),
               exports._votes_query(domain=None, source=None), exports._keys_query(domain=None, source=None)]
    fast = exports._read_sqlite_children(store, store.engine.url.database, queries)
    plain = [exports._read_in_process(store, q, schema) for q, schema in queries]
    for a, b in zip(fast, plain, strict=True):
        assert a.equals(b)


# --- the airline tweets -----------------------------------------------------------------------------------------

TWEET_ARGS = dict(domain="customer_service", text_column="text", label_column="airline_sentiment",
                  id_column="tweet_id", group_column="name")


@pytest.fixture(scope="module")
def tweets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tweets ingested oldest 90% first (exported once into `out`), then the newest 10%."""
    from pipelines.ingest import ingest_files

    raw = pd.read_csv(shared_data("twitter_us_airline_sentiment", "Tweets.csv"), dtype=str, keep_default_na=False)
    order = np.argsort(pd.to_datetime(raw["tweet_created"], format="mixed", utc=True).to_numpy(), kind="stable")
    base = tmp_path_factory.mktemp("tweets")
    cut = int(len(raw) * 0.9)
    raw.iloc[order[:cut]].to_csv(base / "tweets_old.csv", index=False)
    raw.iloc[order[cut:]].to_csv(base / "tweets_new.csv", index=False)
    url = f"sqlite:///{base / 'curate.db'}"
    store = open_store(url)
    ingest_files(store, [base / "tweets_old.csv"], **TWEET_ARGS)
    first = export_dataset(store, out=base / "nightly")
    ingest_files(store, [base / "tweets_new.csv"], **TWEET_ARGS)
    return {"store": store, "raw": raw, "db": base / "curate.db", "out": base / "nightly", "first": first,
            "base": base}


def _doc_of_tweet(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT external_id, document_id FROM occurrences WHERE external_id IS NOT NULL"))


@pytest.mark.integration
@pytest.mark.slow
def test_tweets_no_text_or_user_in_two_splits(tweets: dict[str, Any], tmp_path: Path) -> None:
    res = export_dataset(tweets["store"], out=tmp_path)
    rows = _all_rows(res["out"])
    assert len(rows) == sum(res["rows"].values()) > 14_000
    texts = rows.assign(t=rows["text"].map(_norm)).groupby("t")["split"].nunique()
    assert (texts == 1).all()
    raw = tweets["raw"]
    assert raw["text"].duplicated().sum() > 100  # hundreds of duplicate texts ...
    conflicting = raw.groupby("text")["airline_sentiment"].nunique()
    assert (conflicting > 1).sum() > 10  # ... some with conflicting labels
    doc_split = rows.set_index("id")["split"]
    user_split = raw["tweet_id"].map(_doc_of_tweet(tweets["db"])).map(doc_split)
    assert user_split.notna().mean() > 0.99
    assert (user_split.groupby(raw["name"]).nunique() <= 1).all()  # a user's tweets never straddle splits
    assert (rows["agreement"] < 1).sum() >= 10 and set(rows["label_source"]) == {"imported"}


@pytest.mark.integration
@pytest.mark.slow
def test_tweets_label_shares_within_three_points(tweets: dict[str, Any], tmp_path: Path) -> None:
    rows = _all_rows(export_dataset(tweets["store"], out=tmp_path)["out"])
    overall = rows["label"].value_counts(normalize=True)
    big = rows["label"].value_counts()[lambda c: c >= 50].index
    for split in SPLIT_NAMES:
        share = rows.loc[rows["split"] == split, "label"].value_counts(normalize=True)
        gaps = (share.reindex(big, fill_value=0) - overall[big]).abs() * 100
        assert gaps.max() <= 3.0, (split, gaps.to_dict())
    assert rows["split"].value_counts(normalize=True)["train"] == pytest.approx(0.8, abs=0.01)


@pytest.mark.integration
@pytest.mark.slow
def test_tweets_same_seed_identical_files(tweets: dict[str, Any], tmp_path: Path) -> None:
    a = export_dataset(tweets["store"], out=tmp_path / "a", seed=21)
    b = export_dataset(tweets["store"], out=tmp_path / "b", seed=21)
    assert a["version"] == b["version"]
    for name in ("train.parquet", "dev.parquet", "test.parquet", "assignments.parquet"):
        assert (Path(a["out"]) / name).read_bytes() == (Path(b["out"]) / name).read_bytes(), name
    c = export_dataset(tweets["store"], out=tmp_path / "c", seed=22)
    assert c["version"] != a["version"]
    moved = (read_assignments(a["out"])["split"] != read_assignments(c["out"])["split"]).mean()
    assert moved > 0.1


@pytest.mark.integration
@pytest.mark.slow
def test_tweets_ten_percent_new_documents_move_no_old_one(tweets: dict[str, Any]) -> None:
    first = tweets["first"]
    second = export_dataset(tweets["store"], out=tweets["out"])
    assert second["anchored_on"] == first["version"] and second["leaks"]["total"] == 0
    assert sum(second["rows"].values()) > sum(first["rows"].values()) * 1.08
    d = diff_versions(tweets["out"], first["version"], second["version"])
    assert d["removed"] == 0 and d["added"] > 1000
    old = read_assignments(first["out"]).set_index("id")
    new = read_assignments(second["out"]).set_index("id")
    changed = old.index[old["split"] != new.loc[old.index, "split"]]
    # The only documents allowed to move: those whose group was merged, by the new tweets' links, with old
    # documents of another split (keeping both would leak); the minority side of such a merge moves.
    for doc_id in changed:
        group = new.loc[doc_id, "group"]
        members = old.index.intersection(new.index[new["group"] == group])
        assert old.loc[members, "split"].nunique() > 1, doc_id
    assert len(changed) == second["moved_documents"] <= 0.002 * len(old)
    assert d["moved"] == len(changed)
    rows = _all_rows(second["out"])
    overall = rows["label"].value_counts(normalize=True)
    for split in SPLIT_NAMES:
        share = rows.loc[rows["split"] == split, "label"].value_counts(normalize=True)
        assert ((share - overall).abs() * 100).max() <= 3.0


@pytest.mark.integration
@pytest.mark.slow
def test_tweets_time_split_trains_on_older_tweets(tweets: dict[str, Any], tmp_path: Path) -> None:
    res = export_dataset(tweets["store"], out=tmp_path, time_split="tweet_created")
    rows = read_assignments(res["out"])
    with sqlite3.connect(tweets["db"]) as conn:
        when = dict(conn.execute("SELECT id, json_extract(meta, '$.tweet_created') FROM documents"))
    rows["time"] = pd.to_datetime(rows["id"].map(when), format="mixed", utc=True)
    newest = rows.groupby("group").agg(time=("time", "max"), split=("split", "first"))
    assert newest.groupby("split")["time"].max()["train"] <= newest.groupby("split")["time"].min()["test"]
    assert rows["split"].value_counts(normalize=True)["train"] == pytest.approx(0.8, abs=0.01)
