"""Encoding speed: `curation.encoder.Encoder` against sentence-transformers `encode()`, in the same run.

Texts are the real short texts of ../shared/data (BANKING77, Financial PhraseBank, Twitter financial news, Twitter
US airline), repeated to `--texts` (default 1,000,000 on CUDA, 2,000 on CPU). Throughput includes tokenization.
Models: a bert-base-shaped BERT with random weights (speed does not depend on the weights) and the packaged
all-MiniLM-L6-v2. sentence-transformers runs with its defaults (batch 32, fp32) on `--st-texts` of the same texts.

Goals (issue 4, NVIDIA H100): bert-base >= 60,000 texts/s and >= 7x sentence-transformers.

    .venv/bin/python benchmarks/encoder/run.py                 # CUDA when present, else CPU
    .venv/bin/python benchmarks/encoder/run.py --device cpu --texts 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from curation.encoder import Encoder, library_versions, resolve_device, save_random_bert  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def real_texts() -> list[str]:
    texts: list[str] = []
    for name in ("train.csv", "test.csv"):
        texts += pd.read_csv(DATA / "banking77" / name)["text"].astype(str).tolist()
    raw = (DATA / "financial_phrasebank" / "Sentences_AllAgree.txt").read_text(encoding="latin-1")
    texts += [line.rsplit("@", 1)[0].strip() for line in raw.splitlines() if "@" in line]
    for name in ("sent_train.csv", "sent_valid.csv"):
        texts += pd.read_csv(DATA / "twitter_financial_news_sentiment" / name)["text"].astype(str).tolist()
    texts += pd.read_csv(DATA / "twitter_us_airline_sentiment" / "Tweets.csv")["text"].astype(str).tolist()
    return [t for t in texts if t.strip()]


def repeat_to(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """n texts: whole copies of the corpus plus a random remainder, shuffled (the corpus mix is kept)."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.tile(np.arange(len(texts)), n // len(texts)),
                          rng.choice(len(texts), n % len(texts), replace=False)])
    return [texts[i] for i in idx[rng.permutation(n)]]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ours(enc: Encoder, texts: list[str]) -> tuple[dict[str, Any], np.ndarray]:
    enc.encode(texts[:2000])  # warm-up: CUDA context, kernels, allocator
    sync(enc.device)
    if enc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = enc.encode(texts)
    sync(enc.device)
    dt = time.perf_counter() - t0
    row: dict[str, Any] = {"texts": len(texts), "seconds": round(dt, 3), "texts_per_s": round(len(texts) / dt, 1),
                           "dtype": str(enc.dtype).replace("torch.", ""), "batch_tokens": enc.batch_tokens}
    if enc.device.type == "cuda":
        row["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row, out


def time_st(folder: Path, texts: list[str], device: torch.device) -> tuple[dict[str, Any], np.ndarray] | None:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    model = SentenceTransformer(str(folder), device=str(device))
    model.encode(texts[:2000])
    sync(device)
    t0 = time.perf_counter()
    out = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    sync(device)
    dt = time.perf_counter() - t0
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"texts": len(texts), "seconds": round(dt, 3), "texts_per_s": round(len(texts) / dt, 1),
            "settings": "defaults (batch_size 32, fp32)"}, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--texts", type=int, default=None)
    ap.add_argument("--st-texts", type=int, default=None)
    ap.add_argument("--models", default="bert-base,minilm")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    n = args.texts or (1_000_000 if cuda else 2_000)
    n_st = min(n, args.st_texts or (200_000 if cuda else 500))
    base = real_texts()
    texts = repeat_to(base, n)
    cache = ROOT / "benchmarks" / ".cache"
    folders = {
        "bert-base": lambda: save_random_bert(cache / "bert-base-random") if not (
            cache / "bert-base-random" / "config.json").exists() else cache / "bert-base-random",
        "minilm": lambda: None,
    }
    result: dict[str, Any] = {
        "device": str(device), "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "versions": library_versions(),
        "distinct_texts": len(base), "texts": n, "models": {},
    }
    for name in args.models.split(","):
        folder = folders[name]()
        enc = Encoder(folder, device=str(device), batch_tokens=args.batch_tokens)
        tok = enc.tokenize(texts[:20_000])
        result["mean_word_pieces"] = round(float(tok.lengths.mean()), 2)
        ours, emb = time_ours(enc, texts)
        row: dict[str, Any] = {"model": enc.ref.name, "shape": {"hidden": enc.dim,
                                                               "layers": enc.config.num_hidden_layers},
                               "ours": ours}
        model_path = enc.ref.path
        del enc
        if cuda:
            torch.cuda.empty_cache()
        st = time_st(model_path, texts[:n_st], device)
        if st is not None:
            row["sentence_transformers"], st_emb = st
            row["speedup_vs_sentence_transformers"] = round(ours["texts_per_s"] / st[0]["texts_per_s"], 2)
            row["min_cosine_vs_sentence_transformers"] = round(float((emb[:n_st] * st_emb).sum(axis=1).min()), 5)
        result["models"][name] = row
        print(json.dumps({name: row}), file=sys.stderr, flush=True)
    bb = result["models"].get("bert-base")
    if bb and cuda:
        result["goal"] = {"texts_per_s": bb["ours"]["texts_per_s"], "target_texts_per_s": 60_000,
                          "speedup": bb.get("speedup_vs_sentence_transformers"), "target_speedup": 7,
                          "met": bb["ours"]["texts_per_s"] >= 60_000
                          and (bb.get("speedup_vs_sentence_transformers") or 0) >= 7}
    else:
        result["goal"] = {"met": None, "note": "the goal is defined on an NVIDIA H100; this run had no CUDA device"}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"encoder_{'cuda' if cuda else 'cpu'}_{date.today().isoformat()}.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
