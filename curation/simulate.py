"""Active learning on a labeled file, the file's labels playing the annotator: pick a strategy before paying anyone.

Why it mirrors `curate sample`: the same encoder, cache, classifier and `strategies.select()` run here; only the
oracle differs. Each seed draws one random initial set shared by all strategies (a fair comparison), then every
round trains on the labels so far, scores the test file and selects the next batch from the rest of the train file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from curation.errors import ConfigError, InputError
from curation.strategies import build_context, get_strategy, select

__all__ = ["read_labeled_file", "simulate", "labels_to_reach", "plot_curves"]


def read_labeled_file(path: str | Path, *, text_column: str, label_column: str) -> pd.DataFrame:
    """Columns `text` and `label` from a CSV/TSV/JSONL/JSON/Parquet file; rows missing either are dropped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"File {p} does not exist.", hint="pass an existing --train/--test file")
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    try:
        if suffix.startswith(".csv"):
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
        elif suffix.startswith((".tsv", ".tab")):
            df = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
        elif suffix.startswith((".jsonl", ".ndjson")):
            df = pd.read_json(p, lines=True, dtype=False)
        elif suffix.startswith(".json"):
            df = pd.read_json(p, dtype=False)
        elif suffix.startswith(".parquet"):
            df = pd.read_parquet(p)
        else:
            raise InputError(f"Cannot read {p}: unknown file type {suffix!r}.",
                             hint="use .csv, .tsv, .jsonl, .json or .parquet")
    except (ValueError, OSError) as exc:
        raise InputError(f"Cannot read {p}: {exc}") from exc
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise InputError(f"{p} has no column(s) {missing}; it has {list(df.columns)}.",
                         hint="pass --text-column and --label-column")
    out = pd.DataFrame({"text": df[text_column].astype("string"), "label": df[label_column].astype("string")})
    out = out[out["text"].notna() & out["label"].notna()]
    out = out[(out["text"].str.strip() != "") & (out["label"].str.strip() != "")]
    if out.empty:
        raise InputError(f"{p} has no rows with both {text_column!r} and {label_column!r}.")
    return out.reset_index(drop=True).astype(str)


def labels_to_reach(labels: Sequence[int], accuracy: Sequence[float], target: float) -> int | None:
    """The first label count whose mean accuracy reaches `target` (None: not within the budget)."""
    for n, acc in zip(labels, accuracy, strict=True):
        if acc >= target:
            return int(n)
    return None


def _evaluate(clf: Any, classes: list[str], x_test: Any, y_test: np.ndarray,
              fallback: str) -> tuple[float, float]:
    if clf is None:
        pred = np.full(len(y_test), fallback, dtype=object)
    else:
        pred = np.asarray(classes, dtype=object)[clf.predict_proba(x_test).argmax(axis=1)]
    return float(accuracy_score(y_test, pred)), float(f1_score(y_test, pred, average="macro", zero_division=0))


def simulate(
    train: str | Path | pd.DataFrame,
    test: str | Path | pd.DataFrame,
    *,
    strategies: Sequence[str],
    initial: int,
    batch: int,
    rounds: int,
    text_column: str = "text",
    label_column: str = "label",
    seeds: int = 1,
    mode: str = "fast",
    head: str = "logreg",
    model: str | None = None,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    min_labels: int = 1,
    mc_samples: int = 10,
    full_reference: bool = True,
    classifier_options: dict[str, Any] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Learning curves per strategy: labels, accuracy and macro-F1 mean/sd over seeds, plus the full-data reference."""
    from curation.embeddings import EmbeddingCache, default_cache_dir, embed_texts
    from curation.encoder import Encoder, library_versions

    started = time.perf_counter()
    if initial < 1 or batch < 1 or rounds < 0 or seeds < 1:
        raise ConfigError("--initial and --batch must be >= 1, --rounds >= 0 and --seeds >= 1.")
    names = [get_strategy(s).name for s in strategies]
    if not names:
        raise ConfigError("No strategies given.", hint="pass --strategies random,margin,...")
    tr = train if isinstance(train, pd.DataFrame) else read_labeled_file(train, text_column=text_column,
                                                                        label_column=label_column)
    te = test if isinstance(test, pd.DataFrame) else read_labeled_file(test, text_column=text_column,
                                                                       label_column=label_column)
    if initial + batch * rounds > len(tr):
        raise ConfigError(
            f"initial + batch x rounds = {initial + batch * rounds} exceeds the {len(tr)} training rows.",
            hint="lower --rounds or --batch",
        )
    say = on_progress or (lambda _m: None)
    encoder = Encoder(model, device=device)
    dev = str(encoder.device)
    cache = EmbeddingCache(default_cache_dir(None, str(cache_dir) if cache_dir else None), encoder.key)
    say(f"encoding {len(tr) + len(te)} texts with {encoder.ref.name} on {dev}")
    t0 = time.perf_counter()
    emb, enc_stats = embed_texts(list(tr["text"]) + list(te["text"]), encoder=encoder, cache=cache)
    encode_seconds = time.perf_counter() - t0
    x_tr, x_te = emb[: len(tr)], emb[len(tr) :]
    texts_tr, y_tr_str = tr["text"].tolist(), tr["label"].to_numpy(dtype=object)
    y_te = te["label"].to_numpy(dtype=object)
    finetune = mode == "finetune"
    test_inputs: Any = te["text"].tolist() if finetune else x_te
    common: dict[str, Any] = {"mode": mode, "head": head, "device": dev, "model": model, "mc_samples": mc_samples,
                              "classifier_options": classifier_options}

    full: dict[str, Any] | None = None
    if full_reference:
        say("training on all labels (reference)")
        ctx, clf, codes = build_context(
            pool_ids=np.arange(1), pool_embeddings=x_tr[:1], labeled_embeddings=x_tr, labeled_labels=list(y_tr_str),
            strategy="margin", seed=0, pool_texts=texts_tr[:1], labeled_texts=texts_tr, **common)
        acc, f1 = _evaluate(clf, codes.classes, test_inputs, y_te, fallback=str(y_tr_str[0]))
        full = {"labels": len(tr), "accuracy": acc, "macro_f1": f1}
        if clf is not None:
            clf.release()

    runs: dict[str, dict[str, list[list[float]]]] = {n: {"acc": [], "f1": [], "sec": []} for n in names}
    notes: dict[str, list[str]] = {n: [] for n in names}
    label_counts = [initial + batch * r for r in range(rounds + 1)]
    for seed in range(seeds):
        start_rows = np.random.default_rng(seed).choice(len(tr), initial, replace=False)
        for name in names:
            labeled = np.zeros(len(tr), dtype=bool)
            labeled[start_rows] = True
            accs, f1s, secs = [], [], []
            for r in range(rounds + 1):
                t_round = time.perf_counter()
                lab_rows = np.flatnonzero(labeled)
                pool_rows = np.flatnonzero(~labeled)
                ctx, clf, codes = build_context(
                    pool_ids=pool_rows, pool_embeddings=x_tr[pool_rows], labeled_embeddings=x_tr[lab_rows],
                    labeled_labels=list(y_tr_str[lab_rows]), strategy=name, seed=seed, min_labels=min_labels,
                    pool_texts=[texts_tr[i] for i in pool_rows] if finetune else None,
                    labeled_texts=[texts_tr[i] for i in lab_rows] if finetune else None, **common)
                majority = pd.Series(y_tr_str[lab_rows]).mode().iloc[0]
                acc, f1 = _evaluate(clf, codes.classes, test_inputs, y_te, fallback=str(majority))
                accs.append(acc)
                f1s.append(f1)
                if r < rounds:
                    res = select(name, ctx, batch, seed=seed * 100_003 + r)
                    labeled[res.ids] = True
                    if res.note and res.note not in notes[name]:
                        notes[name].append(res.note)
                if clf is not None:
                    clf.release()
                secs.append(time.perf_counter() - t_round)
            runs[name]["acc"].append(accs)
            runs[name]["f1"].append(f1s)
            runs[name]["sec"].append(secs)
            say(f"seed {seed} {name}: accuracy {accs[0]:.3f} -> {accs[-1]:.3f}")

    out_strategies: dict[str, Any] = {}
    for name in names:
        acc_runs = np.asarray(runs[name]["acc"])
        f1_runs = np.asarray(runs[name]["f1"])
        out_strategies[name] = {
            "labels": label_counts,
            "accuracy_mean": acc_runs.mean(axis=0).tolist(),
            "accuracy_sd": acc_runs.std(axis=0, ddof=1).tolist() if seeds > 1 else [0.0] * len(label_counts),
            "macro_f1_mean": f1_runs.mean(axis=0).tolist(),
            "macro_f1_sd": f1_runs.std(axis=0, ddof=1).tolist() if seeds > 1 else [0.0] * len(label_counts),
            "accuracy_runs": acc_runs.tolist(),
            "seconds_per_round": float(np.mean(runs[name]["sec"])),
            "notes": notes[name],
        }
    result: dict[str, Any] = {
        "strategies": out_strategies,
        "encoder": encoder.describe(),
        "device": dev,
        "mode": mode,
        "head": head if mode == "fast" else None,
        "settings": {"initial": initial, "batch": batch, "rounds": rounds, "seeds": seeds, "train_rows": len(tr),
                     "test_rows": len(te), "classes": int(pd.Series(y_tr_str).nunique())},
        "embedding_cache": {"dir": str(cache.folder), **enc_stats, "seconds": encode_seconds},
        "versions": library_versions(),
        "full_data": full,
        "seconds": time.perf_counter() - started,
    }
    if full is not None:
        target = 0.95 * full["accuracy"]
        result["labels_to_95pct_full"] = {
            n: labels_to_reach(label_counts, out_strategies[n]["accuracy_mean"], target) for n in names
        }
    return result


def plot_curves(result: dict[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """Learning curves (accuracy mean ± sd per strategy, the full-data reference dashed) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for name, s in result["strategies"].items():
        x = np.asarray(s["labels"])
        m, sd = np.asarray(s["accuracy_mean"]), np.asarray(s["accuracy_sd"])
        ax.plot(x, m, marker="o", ms=3, label=name)
        ax.fill_between(x, m - sd, m + sd, alpha=0.15)
    full = result.get("full_data")
    if full:
        ax.axhline(full["accuracy"], ls="--", c="k", lw=1, label=f"all {full['labels']} labels")
        ax.axhline(0.95 * full["accuracy"], ls=":", c="grey", lw=1, label="95% of all-label accuracy")
    ax.set_xlabel("labeled examples")
    ax.set_ylabel("test accuracy")
    st = result.get("settings", {})
    ax.set_title(title or f"Active learning ({result.get('mode')}, {st.get('seeds')} seeds, "
                 f"encoder {result['encoder']['model']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def dump(result: dict[str, Any], path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return out
