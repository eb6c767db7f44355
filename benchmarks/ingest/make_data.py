"""Build the ingest benchmark input: an N-row CSV (`id,text,label,source`) from real public rows.

The base rows are the real texts in ../shared/data (BANKING77, Twitter US Airline Sentiment,
Twitter Financial News Sentiment, Financial PhraseBank AllAgree, about 42k rows). Seeded
perturbations make the file as messy as a real export and large enough to time:

- exact repeats (~15%): a copy of a recently written row;
- near-duplicates (~20%): a recent row with one word swapped, dropped or inserted;
- casing changes (~3%): a recent row upper-, lower- or title-cased;
- injected PII (~3%): an e-mail, phone number or Luhn-valid card number added to a fresh row;
- HTML entities (~1%): `&amp;`, `&#39;`, `&quot;`, `&lt;3` or `<br>` put into a fresh row;
- empty or whitespace-only text (~0.2%).

Every base row is written once before any is reused; after that a fresh row is two base texts of
the same source joined by a space (label of the first), never repeating one written before, so
the only duplicates are the planted ones (plus the few already in the public data).

Rows are generated and written in chunks, so memory stays bounded (peak RSS about 275 MB and
5 s for 1M rows, a 217 MB file).
The output is skipped when it exists and its `.json` sidecar records the same parameters.

    .venv/bin/python benchmarks/ingest/make_data.py --rows 1000000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from curation.errors import CurationError, InputError

__all__ = [
    "DataError",
    "GENERATOR_VERSION",
    "PERTURBATION_RATES",
    "default_data_dir",
    "default_out",
    "load_base_rows",
    "make_data",
    "main",
]

GENERATOR_VERSION = 1
PERTURBATION_RATES: dict[str, float] = {
    "repeat": 0.15,
    "near_duplicate": 0.20,
    "casing": 0.03,
    "pii": 0.03,
    "html": 0.01,
    "empty": 0.002,
}
REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK_ROWS = 50_000
RECENT_ROWS = 50_000
TFNS_LABELS = {"0": "bearish", "1": "bullish", "2": "neutral"}
INSERT_WORDS = ["really", "still", "please", "just", "again", "now", "also", "today", "very", "actually"]
SWAP_WORDS = {
    "my": "the",
    "the": "a",
    "a": "the",
    "is": "was",
    "was": "is",
    "to": "into",
    "card": "debit card",
    "flight": "trip",
    "i": "we",
    "can": "could",
    "not": "never",
    "shares": "stock",
    "profit": "earnings",
    "rose": "increased",
    "fell": "dropped",
}
PHONE_FORMATS = ["+1-{a}-555-{b}", "({a}) 555-{b}", "{a}.555.{b}", "+44 20 7946 {b}", "07700 9{c}"]


class DataError(InputError):
    """The public data this generator needs is missing or not in the expected format."""


def default_data_dir() -> Path:
    return REPO_ROOT.parent / "shared" / "data"


def default_out(rows: int, seed: int) -> Path:
    return REPO_ROOT / "benchmarks" / ".cache" / f"ingest_{rows}_s{seed}.csv"


def _read_csv_columns(path: Path, text_col: str, label_col: str) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DataError(f"expected {path}, found nothing; point --data-dir at the shared data folder")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or text_col not in reader.fieldnames or label_col not in reader.fieldnames:
            raise DataError(f"{path}: expected columns {text_col!r} and {label_col!r}, found {reader.fieldnames}")
        return [(r[text_col], r[label_col]) for r in reader]


def load_base_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    """All real (text, label, source) rows, in file order."""
    out: list[tuple[str, str, str]] = []
    for split in ("train.csv", "test.csv"):
        for text, label in _read_csv_columns(data_dir / "banking77" / split, "text", "category"):
            out.append((text, label, "banking77"))
    tweets = data_dir / "twitter_us_airline_sentiment" / "Tweets.csv"
    for text, label in _read_csv_columns(tweets, "text", "airline_sentiment"):
        out.append((text, label, "twitter_us_airline_sentiment"))
    for split in ("sent_train.csv", "sent_valid.csv"):
        path = data_dir / "twitter_financial_news_sentiment" / split
        for text, label in _read_csv_columns(path, "text", "label"):
            out.append((text, TFNS_LABELS.get(label, label), "twitter_financial_news_sentiment"))
    fpb = data_dir / "financial_phrasebank" / "Sentences_AllAgree.txt"
    if not fpb.is_file():
        raise DataError(f"expected {fpb}, found nothing; point --data-dir at the shared data folder")
    for line in fpb.read_text(encoding="latin-1").splitlines():
        if line.strip():
            sentence, _, label = line.rpartition("@")
            out.append((sentence, label, "financial_phrasebank"))
    return out


def _luhn_card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "52", "55", "6011"])
    body = [int(c) for c in prefix] + [rng.randrange(10) for _ in range(15 - len(prefix))]
    total = 0
    for i, d in enumerate(reversed(body)):
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    digits = "".join(map(str, body)) + str((10 - total % 10) % 10)
    sep = rng.choice([" ", "-", ""])
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


def _pii(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        user = rng.choice(["jane.doe", "m.okafor", "paul_w", "lena88", "t.nguyen", "sam.rivera"])
        return f"contact me at {user}{rng.randrange(1000)}@{rng.choice(['example.com', 'mail.example.org'])}"
    if kind == 1:
        fmt = rng.choice(PHONE_FORMATS)
        phone = fmt.format(a=rng.randrange(200, 990), b=f"{rng.randrange(10000):04d}", c=f"{rng.randrange(100000):05d}")
        return f"call me on {phone}"
    return f"my card is {_luhn_card(rng)}"


def _add_pii(text: str, rng: random.Random) -> str:
    pii = _pii(rng)
    return f"{pii}. {text}" if rng.random() < 0.3 else f"{text} {pii}"


def _add_html(text: str, rng: random.Random) -> str:
    out = text.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&quot;")
    if out == text:
        words = text.split(" ")
        pos = rng.randrange(len(words) + 1)
        words.insert(pos, rng.choice(["&amp;", "&lt;3", "<br>", "&gt;&gt;"]))
        out = " ".join(words)
    return out


def _near_duplicate(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    op = rng.randrange(3)
    if op == 0 or len(words) < 3:
        words.insert(rng.randrange(len(words) + 1), rng.choice(INSERT_WORDS))
    elif op == 1:
        del words[rng.randrange(len(words))]
    else:
        i = rng.randrange(len(words))
        words[i] = SWAP_WORDS.get(words[i].lower(), rng.choice(INSERT_WORDS))
    return " ".join(words)


def _recase(text: str, rng: random.Random) -> str:
    for style in rng.sample(["upper", "lower", "title"], 3):
        out = getattr(text, style)()
        if out != text:
            return out
    return text.swapcase()


class _FreshRows:
    """Real rows once each in shuffled order, then unseen same-source pairs of them."""

    def __init__(self, base: list[tuple[str, str, str]], rng: random.Random) -> None:
        self._rng = rng
        self._order = list(range(len(base)))
        rng.shuffle(self._order)
        self._base = base
        self._pos = 0
        self._by_source: dict[str, list[int]] = {}
        for i, (_, _, source) in enumerate(base):
            self._by_source.setdefault(source, []).append(i)
        self._sources = sorted(self._by_source)
        self._weights = [len(self._by_source[s]) for s in self._sources]
        self._seen_pairs: set[int] = set()

    def next(self) -> tuple[str, str, str]:
        if self._pos < len(self._order):
            self._pos += 1
            return self._base[self._order[self._pos - 1]]
        n = len(self._base)
        while True:
            source = self._rng.choices(self._sources, self._weights)[0]
            pool = self._by_source[source]
            a, b = self._rng.choice(pool), self._rng.choice(pool)
            if a != b and a * n + b not in self._seen_pairs:
                self._seen_pairs.add(a * n + b)
                text_a, label, _ = self._base[a]
                return f"{text_a.rstrip()} {self._base[b][0].lstrip()}", label, source


Chunk = tuple[list[int], list[str], list[str], list[str]]


def _chunks(base: list[tuple[str, str, str]], *, rows: int, seed: int, counts: Counter[str]) -> Iterator[Chunk]:
    """Rows in order, CHUNK_ROWS at a time; `counts` tallies each perturbation kind."""
    rng = random.Random(seed)
    fresh = _FreshRows(base, rng)
    recent: deque[tuple[str, str, str]] = deque(maxlen=RECENT_ROWS)
    kinds = list(PERTURBATION_RATES)
    cumulative: list[float] = []
    acc = 0.0
    for k in kinds:
        acc += PERTURBATION_RATES[k]
        cumulative.append(acc)
    ids: list[int] = []
    texts: list[str] = []
    labels: list[str] = []
    sources: list[str] = []
    for row_id in range(1, rows + 1):
        r = rng.random()
        kind = next((k for k, c in zip(kinds, cumulative, strict=True) if r < c), "fresh")
        if kind in ("repeat", "near_duplicate", "casing") and not recent:
            kind = "fresh"
        if kind == "repeat":
            text, label, source = recent[rng.randrange(len(recent))]
        elif kind == "near_duplicate":
            text, label, source = recent[rng.randrange(len(recent))]
            text = _near_duplicate(text, rng)
        elif kind == "casing":
            text, label, source = recent[rng.randrange(len(recent))]
            text = _recase(text, rng)
        else:
            text, label, source = fresh.next()
            if kind == "pii":
                text = _add_pii(text, rng)
            elif kind == "html":
                text = _add_html(text, rng)
            elif kind == "empty":
                text = rng.choice(["", " ", "\t", "  \n "])
        counts[kind] += 1
        if kind != "empty":
            recent.append((text, label, source))
        ids.append(row_id)
        texts.append(text)
        labels.append(label)
        sources.append(source)
        if len(ids) == CHUNK_ROWS:
            yield ids, texts, labels, sources
            ids, texts, labels, sources = [], [], [], []
    if ids:
        yield ids, texts, labels, sources


def _input_fingerprint(data_dir: Path) -> dict[str, int]:
    files = [
        "banking77/train.csv",
        "banking77/test.csv",
        "twitter_us_airline_sentiment/Tweets.csv",
        "twitter_financial_news_sentiment/sent_train.csv",
        "twitter_financial_news_sentiment/sent_valid.csv",
        "financial_phrasebank/Sentences_AllAgree.txt",
    ]
    return {f: (data_dir / f).stat().st_size for f in files if (data_dir / f).is_file()}


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def make_data(*, rows: int, out: Path, seed: int = 0, data_dir: Path | None = None, force: bool = False) -> dict:
    """Write the benchmark CSV to `out` (unless an identical one is there); return its sidecar record."""
    if rows < 1:
        raise ValueError(f"--rows must be a positive integer, got {rows}")
    data_dir = data_dir or default_data_dir()
    params = {
        "rows": rows,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        "inputs": _input_fingerprint(data_dir),
    }
    side = _sidecar(out)
    if not force and out.is_file() and side.is_file():
        try:
            record = json.loads(side.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            record = {}
        if record.get("params") == params and record.get("bytes") == out.stat().st_size:
            record["cached"] = True
            return record

    started = time.perf_counter()
    base = load_base_rows(data_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("label", pa.string()), ("source", pa.string())])
    counts: Counter[str] = Counter()
    digest = hashlib.sha256()
    try:
        with pacsv.CSVWriter(str(tmp), schema) as writer:
            for ids, texts, labels, sources in _chunks(base, rows=rows, seed=seed, counts=counts):
                writer.write_table(
                    pa.table({"id": ids, "text": texts, "label": labels, "source": sources}, schema=schema)
                )
        with tmp.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    record = {
        "params": params,
        "bytes": out.stat().st_size,
        "sha256": digest.hexdigest(),
        "base_rows": len(base),
        "counts": dict(sorted(counts.items())),
        "seconds": round(time.perf_counter() - started, 2),
        "cached": False,
    }
    side.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to write (default 1,000,000)")
    parser.add_argument("--out", type=Path, default=None, help="output CSV (default benchmarks/.cache/ingest_N_sS.csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding the public data sets")
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching file exists")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.rows, args.seed)
    try:
        record = make_data(rows=args.rows, out=out, seed=args.seed, data_dir=args.data_dir, force=args.force)
    except (CurationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), **record}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
