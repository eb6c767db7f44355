"""Stream records out of CSV, TSV, JSONL, Parquet and plain-text files in bounded chunks.

Every physical record comes out exactly once, as a row of a DataFrame batch (see
`BATCH_COLUMNS`). Rows that cannot become a document still come out, with `error` set to one of
`ERROR_REASONS` and their raw payload, so the caller can quarantine them and account for every
row it read. Problems with the file as a whole (missing, binary, unknown column) raise
`InputError` before the first batch.

`row_number` is 1-based and stable across re-reads: the data-record index (header excluded) for
CSV/TSV and Parquet, the physical line number for the line formats (txt, JSONL), whose blank
lines are not records.

`raw` is what was read, made storable (valid UTF-8, no NUL, undecodable bytes as ``\\xNN``) and
cut to 100,000 characters: the line for txt/JSONL, a JSON object for Parquet, and for CSV/TSV
the fields joined with the separator (a cheap reconstruction without the original quoting;
rows the fallback parser reads, such as malformed ones, keep their exact lines).

`text` is `repair_text`-ed and stripped for every row that has one. CSV/TSV rows with too many
fields are `malformed_row`; rows with too few are padded with empty values, as pandas does.
Text of `too_long` rows is cut to 100,000 characters. Plain-text files have no columns: the
column options are ignored and labels come from a trailing ``@label`` when (nearly) every line
has one.
"""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import decimal
import difflib
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.errors import ConfigError, InputError
from pipelines.encoding import (
    describe_binary,
    detect_encoding,
    looks_binary,
    needs_repair,
    open_text,
    open_utf8_bytes,
    repair_text,
    safe_raw,
)

__all__ = [
    "ReaderOptions",
    "FORMATS",
    "ERROR_REASONS",
    "BATCH_COLUMNS",
    "RAW_LIMIT",
    "sniff_format",
    "read_batches",
]

FORMATS = ("csv", "tsv", "jsonl", "parquet", "txt")
ERROR_REASONS = ("empty_text", "undecodable", "too_long", "missing_field", "malformed_row", "bad_json")
BATCH_COLUMNS = ("row_number", "text", "label", "external_id", "group", "meta", "raw", "error")
RAW_LIMIT = 100_000

_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".jsonlines": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
_TXT_LABEL_RE = re.compile(r"^(.*)@(positive|negative|neutral|[A-Za-z_]+)\s*$", re.DOTALL)
_TXT_LABEL_SHARE = 0.9
_PROBE_LINES = 2000
_PROBE_ROWS = 1000
_SNIFF_BYTES = 1 << 16
_CONTROL_SHARE_UNDECODABLE = 0.05
_FFFD_SHARE_UNDECODABLE = 0.3


@dataclass(frozen=True)
class ReaderOptions:
    """What to read from the file; column names are exact header names."""

    text_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    group_column: str | None = None
    chunk_rows: int = 50_000
    max_chars: int = 20_000
    format: str | None = None
    encoding: str | None = None

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be at least 1, got {self.chunk_rows}")
        if self.max_chars < 1:
            raise ConfigError(f"max_chars must be at least 1, got {self.max_chars}")
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"unknown input format {self.format!r}; expected one of: {', '.join(FORMATS)}")
        if self.encoding is not None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(
                    f"unknown encoding {self.encoding!r}",
                    hint="use a Python codec name such as utf-8, cp1252, latin-1 or mac_roman, "
                    "or leave it out to detect it",
                ) from None


@dataclass(frozen=True)
class _Columns:
    text: str
    label: str | None
    id: str | None
    group: str | None

    @property
    def used(self) -> set[str]:
        return {c for c in (self.text, self.label, self.id, self.group) if c is not None}


# ---------------------------------------------------------------------------------------------
# File-level checks


def _check_file(path: Path) -> Path:
    path = Path(path)
    if path.is_file():
        if path.stat().st_size == 0:
            raise InputError(f"input file {path} is empty", hint="expected a header and data rows")
        return path
    if path.is_dir():
        raise InputError(f"input path {path} is a directory; expected a file")
    parent = path.parent if str(path.parent) else Path(".")
    hint = "check the path"
    if parent.is_dir():
        names = sorted(p.name for p in parent.iterdir() if p.is_file())
        close = difflib.get_close_matches(path.name, names, n=5, cutoff=0.5)
        if close:
            hint = f"did you mean: {', '.join(close)} (in {parent})?"
        elif names:
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            hint = f"files in {parent}: {shown}"
        else:
            hint = f"{parent} has no files"
    else:
        hint = f"directory {parent} does not exist either"
    raise InputError(f"input file not found: {path}", hint=hint)


def _head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _check_text_file(path: Path, fmt: str) -> None:
    head = _head(path)
    if looks_binary(head):
        what = describe_binary(head) or "binary data"
        hint = "convert it to CSV, TSV, JSONL, Parquet or plain text"
        if what == "a Parquet file":
            hint = "pass --format parquet (or rename it to .parquet)"
        raise InputError(f"{path} was read as {fmt} but looks like {what}", hint=hint)


def _resolve_encoding(path: Path, options: ReaderOptions) -> str:
    return options.encoding or detect_encoding(path)


def sniff_format(path: Path) -> str:
    """The reader for `path`: by suffix, else by looking at its first bytes."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    if len(suffixes) >= 2 and "".join(suffixes[-2:]) == ".json.lines":
        return "jsonl"
    head = _head(_check_file(path))
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        return "jsonl"
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:50] if ln.strip()]
    if len(head) == _SNIFF_BYTES:
        lines = lines[:-1]  # may be cut
    for sep, fmt in (("\t", "tsv"), (",", "csv")):
        counts = [ln.count(sep) for ln in lines]
        if len(counts) >= 2 and counts[0] > 0 and sum(c == counts[0] for c in counts) >= 0.8 * len(counts):
            return fmt
    return "txt"


# ---------------------------------------------------------------------------------------------
# Column resolution


def _shown(names: Iterable[str]) -> str:
    names = [safe_raw(n) for n in names]
    return ", ".join(repr(n) for n in names) if names else "(none)"


def _resolve_columns(
    columns: list[str], string_columns: dict[str, float], options: ReaderOptions, path: Path
) -> _Columns:
    """Check the named columns exist; pick the text column ("text", else the only string column).

    `string_columns` maps each column holding non-numeric strings to its mean value length.
    """

    def need(option: str, name: str | None) -> str | None:
        if name is None or name in columns:
            return name
        close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"pass --{option} with one of the columns listed"
        raise InputError(
            f"column {name!r} (--{option}) not found in {path.name}; columns are: {_shown(columns)}",
            hint=hint,
        )

    text = need("text-column", options.text_column)
    if text is None:
        exact = [c for c in columns if c == "text"] or [c for c in columns if c.strip().lower() == "text"]
        if exact:
            text = exact[0]
        elif len(string_columns) == 1:
            text = next(iter(string_columns))
        else:
            hint = "pass --text-column NAME"
            if string_columns and max(string_columns.values()) > 0:
                longest = max(string_columns, key=lambda c: string_columns[c])
                hint += f" (the longest values are in {safe_raw(longest)!r})"
            raise InputError(
                f"cannot tell which column of {path.name} holds the text: there is no 'text' column and "
                f"{len(string_columns) or 'no'} columns hold strings; columns are: {_shown(columns)}",
                hint=hint,
            )
    return _Columns(
        text=text,
        label=need("label-column", options.label_column),
        id=need("id-column", options.id_column),
        group=need("group-column", options.group_column),
    )


# ---------------------------------------------------------------------------------------------
# Value cleaning and batch assembly


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


def _json_value(v: Any) -> Any:
    """A JSON-serialisable, storable version of one value (NaN -> None, numpy -> Python)."""
    if isinstance(v, str):
        return repair_text(v) if needs_repair(v) else v
    if v is None or isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        return None if (math.isnan(v) or math.isinf(v)) else v
    if isinstance(v, np.generic):
        return _json_value(v.item())
    if isinstance(v, dict):
        return {str(_json_value(str(k))): _json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | np.ndarray):
        return [_json_value(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, _dt.datetime | _dt.date | _dt.time | pd.Timestamp):
        return v.isoformat()
    if isinstance(v, _dt.timedelta | pd.Timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, bytes | bytearray | memoryview):
        return repair_text(bytes(v).decode("utf-8", errors="surrogateescape"))
    return _json_value(str(v))


def _scalar_str(v: Any) -> str | None:
    """Label, id and group values as stripped strings (None when missing or blank)."""
    if _is_missing(v):
        return None
    if isinstance(v, str):
        s = repair_text(v) if needs_repair(v) else v
    elif isinstance(v, float) and v.is_integer():
        s = str(int(v))
    elif isinstance(v, np.generic):
        return _scalar_str(v.item())
    elif isinstance(v, bool | int | float | decimal.Decimal):
        s = str(v)
    else:
        s = json.dumps(_json_value(v), ensure_ascii=False)
    s = s.strip()
    return s or None


def _clean_str_column(values: list[Any]) -> list[Any]:
    """Repair a column of (mostly) strings, checking the whole column at once first."""
    try:
        joined = " ".join(values)
    except TypeError:
        return [_json_value(v) for v in values]
    if joined.isascii() and joined.isprintable():
        return values
    return [v if (v.isascii() and v.isprintable()) or not needs_repair(v) else repair_text(v) for v in values]


_RAW_JSON = json.JSONEncoder(ensure_ascii=False, check_circular=False, default=str)


def _row_dicts(names: list[str], columns: list[list[Any]], n: int) -> list[dict[str, Any]]:
    if not names:
        return [{} for _ in range(n)]
    return [dict(zip(names, vals, strict=True)) for vals in zip(*columns, strict=True)]


def _storable_raw(r: str) -> str:
    if r.isascii() and "\x00" not in r:
        return r if len(r) <= RAW_LIMIT else r[:RAW_LIMIT]
    return safe_raw(r[: RAW_LIMIT * 2])[:RAW_LIMIT]


def _frame(
    *,
    row_numbers: list[int],
    texts: list[Any],
    labels: list[Any] | None,
    ids: list[Any] | None,
    groups: list[Any] | None,
    metas: list[dict[str, Any]],
    raws: list[str],
    errors: list[str | None],
    max_chars: int,
) -> pd.DataFrame:
    n = len(texts)
    out_text: list[str | None] = [None] * n
    for i, t in enumerate(texts):
        err = errors[i]
        if not isinstance(t, str):
            if _is_missing(t):
                if err is None:
                    errors[i] = "missing_field"
                continue
            if isinstance(t, dict | list | tuple | np.ndarray):
                if err is None:
                    errors[i] = "malformed_row"
                continue
            t = _scalar_str(t) or ""
        if len(t) > max_chars:
            t = t[:RAW_LIMIT]  # bounded work for a row that goes to quarantine anyway
            if err is None:
                err = errors[i] = "too_long"
        if t.isascii() and t.isprintable():
            s = t.strip()
        else:
            fixed = repair_text(t)
            s = fixed.strip()
            if err is None and (fixed is not t or "\ufffd" in t) and (_garbled(t) or (not s and t.strip())):
                err = errors[i] = "undecodable"
        out_text[i] = s
        if err is None and not s:
            errors[i] = "empty_text"

    def scalars(values: list[Any] | None) -> pd.Series:
        if values is None:
            return pd.Series([None] * n, dtype=object)
        if all(type(v) is str for v in values):
            return pd.Series([v.strip() or None for v in _clean_str_column(values)], dtype=object)
        return pd.Series([_scalar_str(v) for v in values], dtype=object)

    return pd.DataFrame(
        {
            "row_number": np.asarray(row_numbers, dtype=np.int64),
            "text": pd.Series(out_text, dtype=object),
            "label": scalars(labels),
            "external_id": scalars(ids),
            "group": scalars(groups),
            "meta": pd.Series(metas, dtype=object),
            "raw": pd.Series([_storable_raw(r) for r in raws], dtype=object),
            "error": pd.Series(errors, dtype=object),
        }
    )


_CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _garbled(s: str) -> bool:
    """Binary junk rather than text: many control characters or replacement characters."""
    n = len(s)
    return (
        len(_CONTROL_CHARS_RE.findall(s)) > _CONTROL_SHARE_UNDECODABLE * n
        or s.count("\ufffd") > _FFFD_SHARE_UNDECODABLE * n
    )


# ---------------------------------------------------------------------------------------------
# CSV / TSV


def _read_csv_kwargs(sep: str, columns: list[str]) -> dict[str, Any]:
    return {
        "sep": sep,
        "header": 0,
        "names": columns,
        "dtype": object,
        "keep_default_na": False,
        "na_filter": False,
        "index_col": False,
        "encoding": "utf-8",
        "encoding_errors": "surrogateescape",
        "engine": "c",
        "skip_blank_lines": True,
    }


def _probe_csv(path: Path, encoding: str, sep: str) -> tuple[list[str], dict[str, float]]:
    """Header (repaired, unique names) and the columns whose values are non-numeric strings."""
    columns = _csv_header(path, encoding, sep)
    try:
        with open_utf8_bytes(path, encoding=encoding) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = pd.read_csv(fh, nrows=_PROBE_ROWS, on_bad_lines="skip", **_read_csv_kwargs(sep, columns))
    except (pd.errors.ParserError, ValueError, csv.Error):
        return columns, dict.fromkeys(columns, 0.0)
    strings: dict[str, float] = {}
    for j, name in enumerate(columns):
        values = [v for v in probe.iloc[:, j].tolist() if isinstance(v, str) and v.strip()]
        if any(not _looks_numeric(v) for v in values):
            strings[name] = sum(map(len, values)) / len(values)
    return columns, strings


def _looks_numeric(v: str) -> bool:
    try:
        float(v.replace(",", ""))
    except ValueError:
        return False
    return True


def _csv_header(path: Path, encoding: str, sep: str) -> list[str]:
    """The first non-blank record, read with the csv module (pandas cannot hold undecodable names)."""
    if csv.field_size_limit() < 2**31 - 1:
        csv.field_size_limit(2**31 - 1)
    with open_text(path, encoding=encoding) as fh:
        try:
            for fields in csv.reader(fh, delimiter=sep, strict=False):
                if fields and any(f.strip() for f in fields):
                    names = [repair_text(f) for f in fields]
                    return _mangle([n if n else f"Unnamed: {i}" for i, n in enumerate(names)])
        except csv.Error as exc:
            raise InputError(f"cannot read the header row of {path}: {exc}") from None
    raise InputError(f"{path} has no header row", hint="the first line must name the columns")


def _mangle(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out


def _csv_batch(
    columns: list[str],
    col_values: list[list[Any]],
    cols: _Columns,
    *,
    first_row: int,
    sep: str,
    options: ReaderOptions,
    errors: list[str | None] | None = None,
    raws: list[str] | None = None,
) -> pd.DataFrame:
    n = len(col_values[0]) if col_values else 0
    index = {c: i for i, c in enumerate(columns)}
    if raws is None:
        raws = [sep.join(vals) for vals in zip(*col_values, strict=True)]
    meta_names = [c for c in columns if c not in cols.used]
    metas = _row_dicts(meta_names, [_clean_str_column(col_values[index[c]]) for c in meta_names], n)

    def col(name: str | None) -> list[Any] | None:
        return None if name is None else col_values[index[name]]

    return _frame(
        row_numbers=list(range(first_row, first_row + n)),
        texts=col(cols.text),  # type: ignore[arg-type]
        labels=col(cols.label),
        ids=col(cols.id),
        groups=col(cols.group),
        metas=metas,
        raws=raws,
        errors=errors if errors is not None else [None] * n,
        max_chars=options.max_chars,
    )


def _iter_csv(
    path: Path, encoding: str, sep: str, columns: list[str], cols: _Columns, options: ReaderOptions
) -> Iterator[pd.DataFrame]:
    """pandas' C parser while the file is well-formed; at the first chunk it rejects (too many
    fields, a quote never closed) the csv-module fallback resumes after the rows already yielded."""
    done = 0
    try:
        with open_utf8_bytes(path, encoding=encoding) as fh:
            reader = pd.read_csv(fh, chunksize=options.chunk_rows, **_read_csv_kwargs(sep, columns))
            with reader:
                while True:
                    with warnings.catch_warnings():
                        # A header/data length mismatch makes pandas drop fields: use the fallback.
                        warnings.simplefilter("error", pd.errors.ParserWarning)
                        try:
                            chunk = next(reader)
                        except StopIteration:
                            return
                    if chunk.shape[1] != len(columns):
                        raise pd.errors.ParserError("column count changed")
                    values = [chunk.iloc[:, j].tolist() for j in range(chunk.shape[1])]
                    yield _csv_batch(columns, values, cols, first_row=done + 1, sep=sep, options=options)
                    done += len(chunk)
    except (pd.errors.ParserError, pd.errors.ParserWarning, csv.Error):
        pass
    yield from _iter_csv_fallback(path, encoding, sep, columns, cols, options, skip=done)


def _iter_csv_fallback(
    path: Path,
    encoding: str,
    sep: str,
    columns: list[str],
    cols: _Columns,
    options: ReaderOptions,
    *,
    skip: int,
) -> Iterator[pd.DataFrame]:
    """Record-by-record parsing with the csv module: slower, but keeps malformed rows and exact raw."""
    ncols = len(columns)
    captured: list[str] = []
    rows: list[list[str]] = []
    raws: list[str] = []
    errors: list[str | None] = []
    number = 0
    first_row = skip + 1

    def flush() -> pd.DataFrame:
        nonlocal rows, raws, errors, first_row
        col_values = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in columns]
        frame = _csv_batch(
            columns, col_values, cols, first_row=first_row, sep=sep, options=options, errors=errors, raws=raws
        )
        first_row += len(rows)
        rows, raws, errors = [], [], []
        return frame

    with open_text(path, encoding=encoding) as fh:

        def lines() -> Iterator[str]:
            for line in fh:
                captured.append(line)
                yield line

        reader = csv.reader(lines(), delimiter=sep, strict=False)
        header_seen = False
        pending: tuple[list[str] | None, str] | None = None
        while True:
            try:
                fields: list[str] | None = next(reader)
            except StopIteration:
                break
            except csv.Error:
                if not captured:
                    break
                fields = None
            raw = "".join(captured)
            captured.clear()
            if fields is not None and (not fields or (len(fields) == 1 and fields[0] and not fields[0].strip())):
                continue
            if not header_seen:
                header_seen = True
                continue
            if pending is not None:
                number += 1
                if number > skip:
                    _add_fallback_row(pending, ncols, rows, raws, errors)
                    if len(rows) >= options.chunk_rows:
                        yield flush()
            pending = (fields, raw)
        if pending is not None:
            fields, raw = pending
            if raw.count('"') % 2 == 1 and raw.rstrip("\n").count("\n") > 0:
                fields = None  # an opening quote never closed swallowed the rest of the file
            number += 1
            if number > skip:
                _add_fallback_row((fields, raw), ncols, rows, raws, errors)
    if rows:
        yield flush()


def _add_fallback_row(
    record: tuple[list[str] | None, str],
    ncols: int,
    rows: list[list[str]],
    raws: list[str],
    errors: list[str | None],
) -> None:
    fields, raw = record
    raws.append(raw.rstrip("\n"))
    if fields is None or len(fields) > ncols:
        rows.append([None] * ncols)  # type: ignore[list-item]
        errors.append("malformed_row")
        return
    rows.append(fields + [""] * (ncols - len(fields)))
    errors.append(None)


def _csv_source(path: Path, fmt: str, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    _check_text_file(path, fmt)
    encoding = _resolve_encoding(path, options)
    sep = "\t" if fmt == "tsv" else ","
    columns, strings = _probe_csv(path, encoding, sep)
    cols = _resolve_columns(columns, strings, options, path)
    return _iter_csv(path, encoding, sep, columns, cols, options)


# ---------------------------------------------------------------------------------------------
# Plain text


def _txt_source(path: Path, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    _check_text_file(path, "txt")
    encoding = _resolve_encoding(path, options)
    sample: list[str] = []
    with open_text(path, encoding=encoding) as fh:
        for line in fh:
            if line.strip():
                sample.append(line)
                if len(sample) >= _PROBE_LINES:
                    break
    labelled = bool(sample) and (
        sum(1 for s in sample if _TXT_LABEL_RE.match(s.rstrip("\n"))) > _TXT_LABEL_SHARE * len(sample)
    )
    return _iter_txt(path, encoding, labelled, options)


def _iter_txt(path: Path, encoding: str, labelled: bool, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    batch: list[tuple[int, str, str | None, str, str | None]] = []  # line no, text, label, raw, error

    def frame() -> pd.DataFrame:
        numbers, texts, labels, raws, errors = (list(c) for c in zip(*batch, strict=True))
        return _frame(
            row_numbers=numbers,
            texts=texts,
            labels=labels if labelled else None,
            ids=None,
            groups=None,
            metas=[{} for _ in numbers],
            raws=raws,
            errors=errors,
            max_chars=options.max_chars,
        )

    with open_text(path, encoding=encoding) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            m = _TXT_LABEL_RE.match(line) if labelled else None
            if m:
                batch.append((lineno, m.group(1), m.group(2), line, None))
            else:
                batch.append((lineno, line, None, line, "missing_field" if labelled else None))
            if len(batch) >= options.chunk_rows:
                yield frame()
                batch = []
    if batch:
        yield frame()


# ---------------------------------------------------------------------------------------------
# JSONL


def _parse_json_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None, "bad_json"
    if not isinstance(obj, dict):
        return None, "bad_json"
    return obj, None


def _jsonl_source(path: Path, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    _check_text_file(path, "jsonl")
    encoding = _resolve_encoding(path, options)
    keys: dict[str, None] = {}
    string_votes: dict[str, int] = {}
    string_chars: dict[str, int] = {}
    seen = 0
    with open_text(path, encoding=encoding) as fh:
        for line in fh:
            stripped = line.strip()
            if not stripped:
                continue
            if seen == 0 and stripped.startswith("["):
                raise InputError(
                    f"{path} holds a JSON array; expected JSON Lines (one object per line)",
                    hint=f"convert it, e.g. jq -c '.[]' {path.name} > {path.stem}.jsonl",
                )
            seen += 1
            obj, _ = _parse_json_line(stripped)
            if obj is not None:
                for k, v in obj.items():
                    keys.setdefault(k, None)
                    string_votes[k] = string_votes.get(k, 0) + (1 if isinstance(v, str) else -1)
                    string_chars[k] = string_chars.get(k, 0) + (len(v) if isinstance(v, str) else 0)
            if seen >= _PROBE_ROWS:
                break
    if not keys:
        raise InputError(
            f"no JSON object found in the first {seen} non-empty lines of {path}",
            hint="expected one JSON object per line",
        )
    columns = list(keys)
    strings = {k: string_chars[k] / seen for k in columns if string_votes[k] > 0}
    cols = _resolve_columns(columns, strings, options, path)
    return _iter_jsonl(path, encoding, cols, options)


def _jsonl_meta(obj: dict[str, Any] | None, line: str, used: set[str]) -> dict[str, Any]:
    """The object minus the used fields (taken from `obj` itself), cleaned only when it may need it."""
    if obj is None:
        return {}
    for key in used:
        obj.pop(key, None)
    if line.isprintable() and line.isascii() and "\\u" not in line and "NaN" not in line and "Infinity" not in line:
        return obj  # plain printable ASCII JSON: nothing in it can need cleaning
    return {_json_value(k): _json_value(v) for k, v in obj.items()}


def _iter_jsonl(path: Path, encoding: str, cols: _Columns, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    batch: list[tuple[int, dict[str, Any] | None, str, str | None]] = []  # line no, object, raw, error
    used = cols.used

    def frame() -> pd.DataFrame:
        numbers, objs, raws, errors = (list(c) for c in zip(*batch, strict=True))

        def field(name: str | None) -> list[Any] | None:
            return None if name is None else [o.get(name) if o is not None else None for o in objs]

        texts, labels, ids, groups = (field(c) for c in (cols.text, cols.label, cols.id, cols.group))
        return _frame(
            row_numbers=numbers,
            texts=texts,  # type: ignore[arg-type]
            labels=labels,
            ids=ids,
            groups=groups,
            metas=[_jsonl_meta(o, line, used) for o, line in zip(objs, raws, strict=True)],
            raws=raws,
            errors=errors,
            max_chars=options.max_chars,
        )

    with open_text(path, encoding=encoding) as fh:
        for lineno, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            obj, error = _parse_json_line(stripped)
            batch.append((lineno, obj, line.rstrip("\n"), error))
            if len(batch) >= options.chunk_rows:
                yield frame()
                batch = []
    if batch:
        yield frame()


# ---------------------------------------------------------------------------------------------
# Parquet


def _parquet_source(path: Path, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path} is not a readable Parquet file: {exc}") from None
    columns = list(schema.names)
    strings = {f.name: 0.0 for f in schema if _is_arrow_string(f.type)}
    cols = _resolve_columns(columns, strings, options, path)
    return _iter_parquet(path, columns, cols, options)


def _is_arrow_string(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _arrow_values(array: Any) -> list[Any]:
    import pyarrow as pa

    t = array.type
    values = array.to_pylist()
    if _is_arrow_string(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return values
    if pa.types.is_floating(t):
        return [None if (v is None or math.isnan(v) or math.isinf(v)) else v for v in values]
    return [_json_value(v) for v in values]


def _iter_parquet(path: Path, columns: list[str], cols: _Columns, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    done = 0
    meta_names = [c for c in columns if c not in cols.used]
    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=options.chunk_rows):
            n = batch.num_rows
            names = batch.schema.names
            values = {name: _arrow_values(batch.column(i)) for i, name in enumerate(names)}
            metas = _row_dicts(meta_names, [_clean_str_column(values[c]) for c in meta_names], n)
            encode = _RAW_JSON.encode
            raws = [encode(dict(zip(names, v, strict=True))) for v in zip(*(values[c] for c in names), strict=True)]

            def col(name: str | None, values: dict[str, list[Any]] = values) -> list[Any] | None:
                return None if name is None else values[name]

            yield _frame(
                row_numbers=list(range(done + 1, done + n + 1)),
                texts=col(cols.text),  # type: ignore[arg-type]
                labels=col(cols.label),
                ids=col(cols.id),
                groups=col(cols.group),
                metas=metas,
                raws=raws,
                errors=[None] * n,
                max_chars=options.max_chars,
            )
            done += n


# ---------------------------------------------------------------------------------------------


def read_batches(path: Path, options: ReaderOptions) -> Iterator[pd.DataFrame]:
    """Batches of at most `options.chunk_rows` rows with the columns in `BATCH_COLUMNS`.

    The file, its format and its columns are checked when this is called, so an `InputError`
    comes before the first batch; reading itself never raises on bad bytes or bad rows.
    """
    path = _check_file(Path(path))
    fmt = options.format or sniff_format(path)
    if fmt in ("csv", "tsv"):
        return _csv_source(path, fmt, options)
    if fmt == "txt":
        return _txt_source(path, options)
    if fmt == "jsonl":
        return _jsonl_source(path, options)
    return _parquet_source(path, options)
