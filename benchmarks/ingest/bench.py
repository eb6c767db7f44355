"""Ingest benchmark: `curate ingest` end to end on a 1M-row file of real rows, beside the naive pipeline.

Each side runs in its own process, so its peak RSS is its own. Reported: docs/s end to end, docs/s per stage
(stage seconds from the run's own timers), peak RSS, and the ratio to the naive pipeline on the same rows.

    .venv/bin/python -m benchmarks.ingest.bench [--rows 1000000] [--naive-rows 200000] [--workers 0 2]
        [--baseline REV [--repeat 2]]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.ingest.make_data import default_out, make_data

REPO = Path(__file__).resolve().parents[2]


def _run_child(cmd: list[str], *, cwd: Path = REPO) -> tuple[str, float]:
    """Run a command; return its stdout and the peak RSS of it and its children together (polled)."""
    import psutil

    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    peak = 0
    out_chunks: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    reader.join()
    err = proc.stderr.read()  # type: ignore[union-attr]
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {err[-2000:]}")
    return "".join(out_chunks), peak / 2**20


def _head(src: Path, rows: int, dst: Path) -> Path:
    """The first `rows` records of a CSV (records, not lines: texts may hold newlines)."""
    import pandas as pd

    if dst.exists():
        return dst
    pd.read_csv(src, nrows=rows, dtype=str, keep_default_na=False).to_csv(dst, index=False)
    return dst


def run_curate(path: Path, *, workers: int, tmp: Path, repo: Path = REPO, tag: str = "") -> dict:
    """`curate ingest` of `path` in a child process; `repo`: the checkout whose code runs (another revision's
    worktree for a before/after comparison: `python -m` imports from the working directory first)."""
    db = tmp / f"curate_w{workers}{tag}.db"
    cfg = tmp / f"curate_w{workers}{tag}.toml"
    cfg.write_text(f"[ingest]\nworkers = {workers}\n")
    cmd = [sys.executable, "-m", "curation.cli", "ingest", str(path), "--domain", "customer_service",
           "--text-column", "text", "--label-column", "label", "--id-column", "id",
           "--db", f"sqlite:///{db}", "--config", str(cfg), "--json"]
    t0 = time.perf_counter()
    stdout, peak = _run_child(cmd, cwd=repo)
    out = json.loads(stdout)
    out["wall_seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss_mb"] = round(peak, 1)
    return out


def run_naive_subprocess(path: Path, rows: int | None, *, tmp: Path, tokenizer: str = "word_tokenize") -> dict:
    code = (
        "import json,sys; from benchmarks.ingest.naive import run_naive; "
        f"print(json.dumps(run_naive({str(path)!r}, 'sqlite:///{tmp / 'naive.db'}', rows={rows!r}, "
        f"tokenizer={tokenizer!r})))"
    )
    stdout, peak = _run_child([sys.executable, "-c", code])
    out = json.loads(stdout.strip().splitlines()[-1])
    out["peak_rss_mb"] = round(peak, 1)
    return out


def _before_after(path: Path, *, rev: str, workers: int, repeat: int, tmp: Path) -> dict:
    """The same ingest by revision `rev` (a temporary git worktree) and by this checkout, alternately, so that both
    see the same machine load; the store's counts must agree (same results, only the speed may differ)."""
    tree = tmp / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, capture_output=True)
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                             text=True).stdout.strip()
        runs: dict[str, list[float]] = {"baseline": [], "current": []}
        counts = set()
        for i in range(repeat):
            for side, repo in (("baseline", tree), ("current", REPO)):
                out = run_curate(path, workers=workers, tmp=tmp, repo=repo, tag=f"_{side}{i}")
                runs[side].append(out["docs_per_s"])
                counts.add((out["stored"], out["duplicates"], out["near_duplicate_clusters"], out["quarantined"]))
                print(f"{side} ({sha if side == 'baseline' else 'this checkout'}) run {i + 1}: "
                      f"{out['docs_per_s']:.0f} docs/s")
        if len(counts) != 1:
            raise RuntimeError(f"baseline and current stored different results: {sorted(counts)}")
        mean = {k: round(sum(v) / len(v), 1) for k, v in runs.items()}
        return {"revision": sha, "workers": workers, "docs_per_s": runs, "mean_docs_per_s": mean,
                "speedup": round(mean["current"] / mean["baseline"], 3)}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--naive-rows", type=int, default=200_000,
                    help="rows for the naive pipeline and the same-rows comparison (it needs ~6 GB at 1M)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 0, 2],
                    help="worker settings to run; the first is also used for the same-rows comparison (1 is what "
                    "`curate ingest` picks for a large file on 2 cores)")
    ap.add_argument("--baseline", metavar="REV", default=None,
                    help="also run this git revision's `curate ingest` (first --workers setting) on the same file, "
                    "alternating with this checkout's, --repeat times each: a before/after on one machine and hour")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side with --baseline")
    args = ap.parse_args(argv)

    data = make_data(rows=args.rows, out=default_out(args.rows, 0), seed=0)
    path = Path(data["out"]) if "out" in data else default_out(args.rows, 0)
    results: dict = {"rows_requested": args.rows, "input": str(path), "runs": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmpdir:
        tmp = Path(tmpdir)
        for w in args.workers:
            out = run_curate(path, workers=w, tmp=tmp)
            peak = out["peak_rss_mb"]
            stages = {k: round(out["rows_read"] / v) for k, v in out["stage_seconds"].items() if v > 0}
            results["runs"][f"curate_workers_{w}"] = {
                "rows": out["rows_read"], "seconds": out["seconds"], "docs_per_s": out["docs_per_s"],
                # The whole command, Python's start-up and the store's close included.
                "process_seconds": out["wall_seconds"],
                "process_docs_per_s": round(out["rows_read"] / out["wall_seconds"], 1),
                "peak_rss_mb": round(peak, 1), "stored": out["stored"], "duplicates": out["duplicates"],
                "near_duplicate_clusters": out["near_duplicate_clusters"], "quarantined": out["quarantined"],
                "stage_seconds": out["stage_seconds"], "stage_docs_per_s": stages,
            }
            print(f"curate workers={w}: {out['rows_read']} rows in {out['seconds']:.1f}s = "
                  f"{out['docs_per_s']:.0f} docs/s (whole command {out['wall_seconds']:.1f}s), peak RSS {peak:.0f} MB")
        if args.baseline:
            results["baseline"] = _before_after(path, rev=args.baseline, workers=args.workers[0],
                                                repeat=args.repeat, tmp=tmp)
        small = _head(path, args.naive_rows, tmp / f"head_{args.naive_rows}.csv")
        same = run_curate(small, workers=args.workers[0], tmp=tmp, tag="_same_rows")  # a new store, as naive's
        # The naive pipeline as the issue describes it (nltk.word_tokenize), and the stricter, faster variant that
        # tokenises with TreebankWordTokenizer alone (see benchmarks/ingest/naive.py).
        naive = run_naive_subprocess(small, None, tmp=tmp, tokenizer="word_tokenize")
        strict = run_naive_subprocess(small, None, tmp=tmp, tokenizer="treebank")
        results["same_rows"] = {
            "rows": args.naive_rows,
            "curate_docs_per_s": same["docs_per_s"],
            "curate_process_docs_per_s": round(same["rows_read"] / same["wall_seconds"], 1),
            "naive_docs_per_s": round(naive["docs_per_s"], 1),
            "ratio": round(same["docs_per_s"] / naive["docs_per_s"], 2),
            "naive_treebank_docs_per_s": round(strict["docs_per_s"], 1),
            "ratio_vs_treebank": round(same["docs_per_s"] / strict["docs_per_s"], 2),
            "naive": naive,
            "naive_treebank": strict,
            "naive_peak_rss_mb": naive["peak_rss_mb"],
        }
        print(f"same {args.naive_rows} rows: curate {same['docs_per_s']:.0f} docs/s vs naive (word_tokenize) "
              f"{naive['docs_per_s']:.0f} docs/s = {results['same_rows']['ratio']}x, vs naive (treebank) "
              f"{strict['docs_per_s']:.0f} docs/s = {results['same_rows']['ratio_vs_treebank']}x")
    results["goals"] = {"docs_per_s": 25_000, "ratio_vs_naive": 5, "peak_rss_mb": 1536}
    write_result("ingest", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
