"""`curate report`: one self-contained HTML page (plots as inline base64 PNGs, no external files or scripts).

Why PNG rather than inline SVG: matplotlib's SVGs reuse element ids between figures, which clash once several sit
in one page; PNGs are independent and every browser shows them. A plot without data yet (no Label Studio
annotations, no audit) shows a "no data yet" note instead of an empty or broken figure.

Drift is the cosine distance between the mean embedding of documents ingested since the previous night and the
mean embedding of the labeled documents, measured by the nightly `train` step (which has the embeddings at hand)
and read here from the runs table.
"""

from __future__ import annotations

import base64
import html
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["PLOTS", "build_report", "write_report"]

#: (id, title) of every section, in page order; each holds a plot or a "no data yet" note.
PLOTS: tuple[tuple[str, str], ...] = (
    ("labels-over-time", "Labels over time"),
    ("label-distribution", "Label distribution"),
    ("annotator-throughput", "Annotator throughput"),
    ("lead-time", "Annotation lead time"),
    ("agreement-trend", "Agreement trend"),
    ("al-yield", "Active-learning yield (accuracy against labels)"),
    ("label-issues", "Label issues found and confirmed"),
    ("split-sizes", "Split sizes (latest export)"),
    ("drift", "Drift: newly ingested vs labeled text"),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .meta{color:#666;margin-bottom:1.5rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1.2rem}
section{border:1px solid #ddd;border-radius:6px;padding:.8rem} section h2{font-size:1.05rem;margin:.2rem 0 .6rem}
img{max-width:100%;height:auto} .nodata{color:#777;font-style:italic;padding:2rem 0;text-align:center}
table{border-collapse:collapse;font-size:.85rem;width:100%} td,th{border-bottom:1px solid #eee;padding:.25rem .4rem;
text-align:left} .failed{color:#b00020} .ok{color:#1b7f3b}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.2))


def _nights(history: pd.DataFrame, step: str, key: str) -> pd.DataFrame:
    rows = history[(history["step"] == step) & (history["status"] == "ok")]
    vals = [(r.night or str(r.night_id), r.night_id, (r.stats.get("counts") or {}).get(key)) for r in rows.itertuples()]
    frame = pd.DataFrame(vals, columns=["night", "night_id", "value"]).dropna()
    return frame.sort_values("night_id")


def _line(frame: pd.DataFrame, *, ylabel: str, extra: pd.DataFrame | None = None, extra_label: str = "") -> str:
    fig, ax = _figure()
    labels = [f"{n} (#{i})" for n, i in zip(frame["night"], frame["night_id"], strict=True)]
    ax.plot(range(len(frame)), frame["value"].astype(float), marker="o", label=ylabel)
    if extra is not None and len(extra):
        ax2 = ax.twinx()
        ax2.bar(range(len(extra)), extra["value"].astype(float), alpha=0.2, color="gray")
        ax2.set_ylabel(extra_label)
    ax.set_xticks(range(len(frame)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    return _png(fig)


def _plots(store: Any) -> dict[str, str | None]:
    from curation.consensus import training_labels
    from store.nightly import annotations_series, label_issue_counts, latest_export_manifest, nightly_history

    out: dict[str, str | None] = {pid: None for pid, _ in PLOTS}
    ann = annotations_series(store)
    history = nightly_history(store)
    if len(ann):
        daily = ann.set_index("created_at").resample("D").size()
        fig, ax = _figure()
        ax.plot(daily.index, daily.cumsum().to_numpy(), marker="o", label="cumulative")
        ax.bar(daily.index, daily.to_numpy(), alpha=0.3, label="per day")
        ax.set_ylabel("annotations")
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        out["labels-over-time"] = _png(fig)
        per = ann.groupby([ann["created_at"].dt.floor("D"), "annotator"]).size().unstack(fill_value=0)
        fig, ax = _figure()
        bottom = [0] * len(per)
        for annotator in per.columns[:20]:
            values = per[annotator].to_numpy()
            ax.bar(range(len(per)), values, bottom=bottom, label=str(annotator))
            bottom = [b + int(v) for b, v in zip(bottom, values, strict=True)]
        ax.set_xticks(range(len(per)), [d.strftime("%Y-%m-%d") for d in per.index], rotation=30, ha="right")
        ax.set_ylabel("annotations per day")
        ax.legend(fontsize=7)
        out["annotator-throughput"] = _png(fig)
        lead = ann["lead_time"].dropna().astype(float)
        if len(lead):
            fig, ax = _figure()
            ax.hist(lead, bins=min(30, max(5, len(lead) // 3)))
            ax.axvline(float(lead.median()), color="red", linestyle="--", label=f"median {lead.median():.1f}s")
            ax.set_xlabel("seconds per annotation")
            ax.legend(fontsize=8)
            out["lead-time"] = _png(fig)
    labels = training_labels(store)
    if len(labels):
        counts = labels["label"].astype(str).value_counts().head(30)
        fig, ax = _figure()
        ax.barh(counts.index[::-1], counts.to_numpy()[::-1])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("documents (training labels)")
        out["label-distribution"] = _png(fig)
    agreement = _nights(history, "train", "agreement_mean")
    if len(agreement):
        out["agreement-trend"] = _line(agreement, ylabel="mean agreement (>=2 annotations)")
    acc = _nights(history, "train", "cv_accuracy")
    if len(acc):
        out["al-yield"] = _line(acc, ylabel="cross-validated accuracy", extra=_nights(history, "train", "labeled"),
                                extra_label="labels")
    issues = label_issue_counts(store)
    if len(issues):
        found = issues[issues["is_label_issue"].astype(bool)].groupby("run_id")["n"].sum()
        reviewed = issues[issues["review_status"].notna()].groupby(["run_id", "review_status"])["n"].sum().unstack(
            fill_value=0)
        frame = pd.DataFrame({"found": found}).join(reviewed, how="outer").fillna(0)
        fig, ax = _figure()
        frame.plot(ax=ax, kind="bar")
        ax.set_xlabel("audit run")
        ax.set_ylabel("documents")
        out["label-issues"] = _png(fig)
    manifest = latest_export_manifest(store)
    rows = ((manifest or {}).get("summary") or {}).get("rows") or (manifest or {}).get("rows")
    if isinstance(rows, dict) and rows:
        fig, ax = _figure()
        ax.bar(list(rows), [int(v) for v in rows.values()], color=["#4c72b0", "#dd8452", "#55a868"][: len(rows)])
        ax.set_ylabel("documents")
        ax.set_title(f"version {manifest['version'] if manifest else ''}", fontsize=8)
        out["split-sizes"] = _png(fig)
    drift = _nights(history, "train", "drift_cosine")
    if len(drift):
        out["drift"] = _line(drift, ylabel="cosine distance of centroids")
    return out


def _runs_table(store: Any) -> str:
    from store.nightly import nightly_history

    history = nightly_history(store, limit=14)
    if history.empty:
        return '<p class="nodata">no nightly runs yet</p>'
    parts = ["<table><tr><th>run</th><th>night</th><th>step</th><th>status</th><th>seconds</th><th>reason</th></tr>"]
    for r in history.sort_values(["night_id", "step"], ascending=[False, True]).itertuples():
        reason = r.error or (r.stats.get("reason") if isinstance(r.stats, dict) else None) or ""
        secs = "" if r.seconds is None or pd.isna(r.seconds) else f"{float(r.seconds):.1f}"
        parts.append(f"<tr><td>{r.night_id}</td><td>{html.escape(str(r.night or ''))}</td>"
                     f"<td>{html.escape(r.step)}</td><td class=\"{html.escape(str(r.status))}\">"
                     f"{html.escape(str(r.status))}</td><td>{secs}</td><td>{html.escape(str(reason))[:200]}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


def build_report(store: Any, *, title: str = "curate: nightly report") -> tuple[str, dict[str, Any]]:
    """The page's HTML and what it holds ({"plots": n with data, "empty": [ids without data]})."""
    plots = _plots(store)
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = []
    for pid, name in PLOTS:
        body = (f'<img alt="{html.escape(name)}" src="data:image/png;base64,{plots[pid]}">' if plots[pid]
                else '<p class="nodata">no data yet</p>')
        sections.append(f'<section id="{pid}" data-plot="{"yes" if plots[pid] else "no"}"><h2>{html.escape(name)}'
                        f"</h2>{body}</section>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<link rel="icon" href="data:,">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
            f'<h1>{html.escape(title)}</h1><p class="meta">generated {now} from {html.escape(store.display_url)}</p>'
            f'<div class="grid">{"".join(sections)}</div><h2>Recent nightly runs</h2>{_runs_table(store)}'
            "</body></html>\n")
    return page, {"plots": sum(1 for v in plots.values() if v), "empty": [k for k, v in plots.items() if not v]}


def write_report(store: Any, path: Path | str) -> dict[str, Any]:
    """Write the report atomically (temporary file + rename); returns path, bytes, plots, empty."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    page, info = build_report(store)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return {"path": str(target.resolve()), "bytes": len(page.encode("utf-8")), **info}
