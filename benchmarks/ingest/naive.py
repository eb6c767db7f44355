"""The ingest a user would write by hand, timed as the baseline for `curate ingest`.

pandas reads the whole CSV, `.apply` cleans each text (HTML unescape, URL removal, lower-case,
strip) and tokenises it, `drop_duplicates` removes exact repeats of the cleaned text, and the
SQLAlchemy ORM inserts one mapped object per row with `session.add_all` and a single commit.

Tokenisers (`--tokenizer`, registered by name in `TOKENIZERS`):

- `word_tokenize` (default): what such a script calls, `nltk.word_tokenize`, run as NLTK runs it (Punkt splits
  sentences, `NLTKWordTokenizer` splits each one) with one difference: Punkt's English model is a separate
  download, not available offline, so Punkt runs with its default parameters. The model only adds abbreviations
  and collocations (set look-ups), so the speed is the same.
- `treebank`: `TreebankWordTokenizer` over the whole text, no sentence split: about twice as fast as
  `word_tokenize` on the benchmark rows. An earlier version of this benchmark used it alone, wrongly described as
  "a little faster, if anything"; it is kept, and reported beside the other, as the stricter baseline.

    .venv/bin/python benchmarks/ingest/naive.py --csv benchmarks/.cache/ingest_1000000_s0.csv \\
        --db sqlite:///benchmarks/.cache/naive.sqlite --rows 20000 [--tokenizer treebank]
"""

from __future__ import annotations

import argparse
import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from nltk.tokenize import TreebankWordTokenizer
from nltk.tokenize.destructive import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer
from sqlalchemy import Integer, String, Text, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = ["TOKENIZERS", "NaiveDoc", "clean_text", "run_naive", "main"]

URL_RE = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)


class _Base(DeclarativeBase):
    pass


class NaiveDoc(_Base):
    """One cleaned document, the shape a quick script would give its table."""

    __tablename__ = "naive_docs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    clean: Mapped[str] = mapped_column(Text)
    tokens: Mapped[str] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)


def clean_text(text: str) -> str:
    return URL_RE.sub("", html.unescape(text)).lower().strip()


def _word_tokenize() -> Callable[[str], list[str]]:
    """`nltk.word_tokenize(text)`: its own two steps, with Punkt's default parameters (see the module docstring)."""
    sentences, words = PunktSentenceTokenizer(), NLTKWordTokenizer()

    def tokenize(text: str) -> list[str]:
        return [token for sent in sentences.tokenize(text) for token in words.tokenize(sent)]

    return tokenize


def _treebank() -> Callable[[str], list[str]]:
    return TreebankWordTokenizer().tokenize


TOKENIZERS: dict[str, Callable[[], Callable[[str], list[str]]]] = {
    "word_tokenize": _word_tokenize,
    "treebank": _treebank,
}


def run_naive(
    csv_path: str | Path, db_url: str, *, rows: int | None = None, tokenizer: str = "word_tokenize"
) -> dict[str, float | int | str]:
    """Ingest the first `rows` rows (all when None) of a benchmark CSV; return counts and timing.

    The target table is dropped and re-created first, so repeated runs do the same work.
    `rows` is the number of input rows read; `kept` the number stored after dropping empty texts
    and exact duplicates; `docs_per_s` is input rows per second of wall time, the whole run
    (read, clean, tokenise, dedup, insert, commit) included; `<stage>_s` keys time each stage.
    """
    engine = create_engine(db_url)
    _Base.metadata.drop_all(engine)
    _Base.metadata.create_all(engine)
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {sorted(TOKENIZERS)}")
    tokenize = TOKENIZERS[tokenizer]()

    stages: dict[str, float] = {}
    started = mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[f"{name}_s"] = round(now - mark, 3)
        mark = now

    df = pd.read_csv(csv_path, nrows=rows)
    n_read = len(df)
    lap("read")
    df = df.dropna(subset=["text"])
    df["clean"] = df["text"].apply(clean_text)
    df = df[df["clean"] != ""]
    lap("clean")
    df["tokens"] = df["clean"].apply(tokenize)
    lap("tokenize")
    df = df.drop_duplicates(subset=["clean"])
    lap("dedup")
    docs = [
        NaiveDoc(
            source_id=int(r.id),
            text=r.text,
            clean=r.clean,
            tokens=" ".join(r.tokens),
            label=None if pd.isna(r.label) else str(r.label),
            source=None if pd.isna(r.source) else str(r.source),
        )
        for r in df.itertuples(index=False)
    ]
    with Session(engine) as session:
        session.add_all(docs)
        session.commit()
    lap("insert")
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "tokenizer": tokenizer,
        "rows": n_read,
        "kept": len(docs),
        "seconds": round(seconds, 3),
        "docs_per_s": round(n_read / seconds, 1) if seconds > 0 else float("inf"),
        **stages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the naive pandas + SQLAlchemy ORM ingest.")
    parser.add_argument("--csv", type=Path, required=True, help="CSV from make_data.py (id,text,label,source)")
    parser.add_argument("--db", default="sqlite:///benchmarks/.cache/naive.sqlite", help="SQLAlchemy URL")
    parser.add_argument("--rows", type=int, default=None, help="read only the first N rows")
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), default="word_tokenize")
    args = parser.parse_args(argv)
    print(json.dumps(run_naive(args.csv, args.db, rows=args.rows, tokenizer=args.tokenizer)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
