"""Label efficiency on BANKING77: learning curves per strategy (fast mode, default encoder, several seeds).

Goal (issue 4): at 770 labels (77 initial + 9 rounds of 77) the best uncertainty strategy beats random by at least
3 accuracy points; and how many labels each strategy needs to reach 95% of the all-labels accuracy (so the run goes
on past 770 labels, `--rounds`, default 40; the first 10 points are the 770-label budget).

    .venv/bin/python benchmarks/active_learning/run.py            # writes benchmarks/results/active_learning_<date>.*

The embeddings are cached under benchmarks/.cache/embeddings, so only the first run encodes the 13k texts.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from curation.simulate import dump, plot_curves, simulate  # noqa: E402

UNCERTAINTY = ("least-confidence", "margin", "entropy", "bald", "badge", "balanced:margin")
DEFAULT = "random,least-confidence,margin,entropy,balanced:margin,badge,coreset,kmeans"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    ap.add_argument("--strategies", default=DEFAULT)
    ap.add_argument("--initial", type=int, default=77)
    ap.add_argument("--batch", type=int, default=77)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--goal-round", type=int, default=9, help="round whose label count is the goal's budget")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--mode", default="fast")
    ap.add_argument("--head", default="logreg", help="fast mode's head: logreg or mlp (bald always uses mlp)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    result = simulate(
        args.data / "train.csv", args.data / "test.csv", text_column="text", label_column="category",
        strategies=args.strategies.split(","), initial=args.initial, batch=args.batch, rounds=args.rounds,
        seeds=args.seeds, mode=args.mode, head=args.head, device=args.device,
        cache_dir=ROOT / "benchmarks" / ".cache" / "embeddings",
        on_progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    g = args.goal_round
    budget = args.initial + g * args.batch
    at_budget = {n: s["accuracy_mean"][g] for n, s in result["strategies"].items()}
    unc = {n: a for n, a in at_budget.items() if n in UNCERTAINTY}
    goal: dict[str, object] = {"labels": budget, "accuracy_at_budget": at_budget}
    if "random" in at_budget and unc:
        best = max(unc, key=lambda n: unc[n])
        gain = 100 * (unc[best] - at_budget["random"])
        goal.update(best_uncertainty=best, points_over_random=round(gain, 2), target_points=3.0, met=gain >= 3.0)
    result["goal"] = goal
    result["benchmark"] = {"dataset": "banking77", "data": str(args.data), "command": " ".join(sys.argv)}
    stem = f"active_learning{('_' + args.tag) if args.tag else ''}_{date.today().isoformat()}"
    out_json = dump(result, args.out / f"{stem}.json")
    plot_curves(result, args.out / f"{stem}.png",
                title=f"BANKING77, {result['mode']} mode, {args.seeds} seeds, {result['encoder']['model']} "
                      f"on {result['device']}")
    summary = {"goal": goal, "full_data": result["full_data"],
               "labels_to_95pct_full": result.get("labels_to_95pct_full"),
               "seconds": round(result["seconds"], 1), "json": str(out_json)}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
