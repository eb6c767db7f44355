"""Streaming readers: every format, encoding and kind of broken row."""

from __future__ import annotations

import csv
import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import ConfigError, InputError
from pipelines.readers import BATCH_COLUMNS, ERROR_REASONS, ReaderOptions, read_batches, sniff_format

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHRASEBANK = DATA / "financial_phrasebank"


def read_all(path: Path, **options: object) -> pd.DataFrame:
    frames = list(read_batches(path, ReaderOptions(**options)))  # type: ignore[arg-type]
    for frame in frames:
        assert tuple(frame.columns) == BATCH_COLUMNS
    if not frames:
        return pd.DataFrame(columns=list(BATCH_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.to_dict("records")


# --- CSV / TSV -----------------------------------------------------------------------------------


def test_csv_columns_meta_and_raw(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "id,text,label,source,score\n7,Hello there,pos,web,0.5\n8,Bye,neg,,\n")
    df = read_all(path, label_column="label", id_column="id")
    assert rows(df) == [
        {
            "row_number": 1,
            "text": "Hello there",
            "label": "pos",
            "external_id": "7",
            "group": None,
            "meta": {"source": "web", "score": "0.5"},
            "raw": "7,Hello there,pos,web,0.5",
            "error": None,
        },
        {
            "row_number": 2,
            "text": "Bye",
            "label": "neg",
            "external_id": "8",
            "group": None,
            "meta": {"source": "", "score": ""},
            "raw": "8,Bye,neg,,",
            "error": None,
        },
    ]
    json.dumps(df["meta"].tolist())


def test_csv_bom_crlf_bare_cr_and_quoted_multiline(tmp_path: Path) -> None:
    data = (
        b"\xef\xbb\xbftext,label\r\n"
        b'"first line\r\nsecond line, with comma",a\r\n'
        b"bare\rcarriage return,b\r\n"
        b'"say ""hi""",c\r\n'
    )
    df = read_all(write(tmp_path, "b.csv", data), label_column="label")
    assert df["text"].tolist() == [
        "first line\nsecond line, with comma",
        "bare carriage return",
        'say "hi"',
    ]
    assert df["label"].tolist() == ["a", "b", "c"]
    assert df["row_number"].tolist() == [1, 2, 3]
    assert df["error"].isna().all()


@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "mac_roman"])
def test_csv_in_each_encoding(tmp_path: Path, codec: str) -> None:
    texts = ["Größe und Übermut in Zürich", "El niño comió en la montaña", "café “au” lait – bon"]
    if codec == "latin-1":
        texts[2] = "café au lait, très bon"
    body = "text,label\n" + "".join(f'"{t}",x\n' for t in texts)
    df = read_all(write(tmp_path, "enc.csv", body.encode(codec)))
    assert df["text"].tolist() == texts


def test_tsv(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", 'text\tlabel\nhas, commas\tx\n"quoted\ttab"\ty\n')
    df = read_all(path, label_column="label")
    assert df["text"].tolist() == ["has, commas", "quoted\ttab"]
    assert df["raw"].tolist() == ["has, commas\tx", "quoted\ttab\ty"]


def test_old_mac_csv(tmp_path: Path) -> None:
    df = read_all(write(tmp_path, "mac.csv", b"text,label\rone,a\rtwo,b\r"), label_column="label")
    assert df["text"].tolist() == ["one", "two"]


def test_bad_rows_are_quarantined_with_reason_and_raw(tmp_path: Path) -> None:
    data = (
        b"text,label\n"
        b"good one,a\n"
        b",b\n"  # empty text
        b"   ,c\n"  # blank text
        b"too,many,fields\n"
        + b"x" * 50
        + b",d\n"  # over max_chars
        + b"\x01\x02\x03\x04junk\x05\x06\x07,e\n"  # control bytes
        b"short row\n"  # padded like pandas does, not an error
        b"good two,f\n"
    )
    df = read_all(write(tmp_path, "bad.csv", data), label_column="label", max_chars=40)
    assert df["row_number"].tolist() == list(range(1, 9))
    assert df["error"].tolist() == [
        None,
        "empty_text",
        "empty_text",
        "malformed_row",
        "too_long",
        "undecodable",
        None,
        None,
    ]
    malformed = df.iloc[3]
    assert malformed["raw"] == "too,many,fields"
    assert malformed["text"] is None
    assert set(df["error"].dropna()) <= set(ERROR_REASONS)
    assert df.iloc[6]["text"] == "short row" and df.iloc[6]["label"] is None


def test_malformed_row_in_a_later_chunk_keeps_numbering(tmp_path: Path) -> None:
    lines = [f"row {i},{i % 3}" for i in range(1, 101)]
    lines[76] = "row 77,1,extra"
    path = write(tmp_path, "late.csv", "text,label\n" + "\n".join(lines) + "\n")
    frames = list(read_batches(path, ReaderOptions(label_column="label", chunk_rows=10)))
    assert all(len(f) <= 10 for f in frames)
    df = pd.concat(frames, ignore_index=True)
    assert df["row_number"].tolist() == list(range(1, 101))
    assert df.loc[df["error"].notna(), "row_number"].tolist() == [77]
    assert df.loc[75, "text"] == "row 76" and df.loc[77, "text"] == "row 78"
    assert df.loc[76, "raw"] == "row 77,1,extra"


def test_long_first_data_row_is_not_silently_truncated(tmp_path: Path) -> None:
    # pandas would take the extra leading field as an index, or drop fields with index_col=False.
    path = write(tmp_path, "first.csv", "text,label\nfirst,1,extra\nsecond,2\n")
    df = read_all(path, label_column="label")
    assert df["error"].tolist() == ["malformed_row", None]
    assert df["text"].tolist() == [None, "second"]


def test_unterminated_quote_at_end(tmp_path: Path) -> None:
    path = write(tmp_path, "quote.csv", 'text,label\nok,1\n"never closed,2\nmore,3\n')
    df = read_all(path, label_column="label")
    assert df["error"].tolist() == [None, "malformed_row"]
    assert df.iloc[1]["raw"] == '"never closed,2\nmore,3'


def test_mixed_encoding_field_is_repaired_and_raw_shows_bytes(tmp_path: Path) -> None:
    data = b"text,label\n" + "naïve “quoted” row,1\n".encode() * 20 + b"caf\xe9 cr\xe8me,2\n"
    df = read_all(write(tmp_path, "mixed.csv", data), label_column="label")
    last = df.iloc[-1]
    assert last["text"] == "café crème"
    assert last["raw"] == "caf\\xe9 cr\\xe8me,2"
    assert last["error"] is None


def test_mojibake_is_repaired(tmp_path: Path) -> None:
    path = write(tmp_path, "moji.csv", "text\nThe cafÃ© is open\n")
    assert read_all(path)["text"].tolist() == ["The café is open"]


def test_header_only_csv_yields_nothing(tmp_path: Path) -> None:
    assert read_all(write(tmp_path, "h.csv", "text,label\n")).empty


# --- column and file errors ------------------------------------------------------------------------


def test_unknown_column_names_expected_and_existing(tmp_path: Path) -> None:
    path = write(tmp_path, "cols.csv", "body,category\nx,y\n")
    with pytest.raises(InputError) as info:
        read_batches(path, ReaderOptions(text_column="body", label_column="label"))
    message = str(info.value)
    assert "'label'" in message and "'body'" in message and "'category'" in message
    assert info.value.exit_code == 2


def test_column_check_happens_before_any_batch(tmp_path: Path) -> None:
    path = write(tmp_path, "cols.csv", "body\nx\n")
    with pytest.raises(InputError, match="--text-column"):
        read_batches(path, ReaderOptions(text_column="txt"))  # not iterated: raised on the call


def test_default_text_column(tmp_path: Path) -> None:
    only = write(tmp_path, "only.csv", "id,sentence,score\n1,hello,0.5\n2,bye,1\n")
    assert read_all(only)["text"].tolist() == ["hello", "bye"]
    named = write(tmp_path, "named.csv", "title,Text\na,hello\n")
    assert read_all(named)["text"].tolist() == ["hello"]
    ambiguous = write(tmp_path, "amb.csv", "sentence,label\nhello,pos\n")
    with pytest.raises(InputError, match="'sentence', 'label'"):
        read_batches(ambiguous, ReaderOptions())


def test_missing_file_names_path_and_neighbours(tmp_path: Path) -> None:
    write(tmp_path, "reviews.csv", "text\nx\n")
    with pytest.raises(InputError) as info:
        read_batches(tmp_path / "review.csv", ReaderOptions())
    assert "review.csv" in str(info.value)
    assert "reviews.csv" in str(info.value)
    assert info.value.exit_code == 2


def test_empty_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty"):
        read_batches(write(tmp_path, "e.csv", b""), ReaderOptions())
    with pytest.raises(InputError, match="directory"):
        read_batches(tmp_path, ReaderOptions())


def test_binary_files_with_text_suffix_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="binary"):
        read_batches(write(tmp_path, "noise.csv", bytes(range(256)) * 64), ReaderOptions())
    with pytest.raises(InputError, match="gzip"):
        read_batches(write(tmp_path, "z.csv", b"\x1f\x8b\x08" + bytes(200)), ReaderOptions())
    table = pa.table({"text": ["a"]})
    pq.write_table(table, tmp_path / "real.parquet")
    disguised = write(tmp_path, "disguised.csv", (tmp_path / "real.parquet").read_bytes())
    with pytest.raises(InputError, match="--format parquet"):
        read_batches(disguised, ReaderOptions())
    assert read_all(disguised, format="parquet")["text"].tolist() == ["a"]


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        ReaderOptions(format="xlsx")
    with pytest.raises(ConfigError):
        ReaderOptions(encoding="no-such-codec")
    with pytest.raises(ConfigError):
        ReaderOptions(chunk_rows=0)


def test_explicit_encoding_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "forced.csv", "text\nSeppälä\n".encode("latin-1"))
    assert read_all(path, encoding="latin-1")["text"].tolist() == ["Seppälä"]


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl(tmp_path: Path) -> None:
    lines = [
        '{"text": "hello", "label": "a", "n": NaN, "nested": {"k": [1, 2]}, "id": 5}',
        "",
        "{not json",
        "[1, 2]",
        '{"label": "b"}',
        '{"text": "bad \\ud800 surrogate \\u0000 nul", "label": null}',
        '{"text": ["a", "list"]}',
    ]
    df = read_all(write(tmp_path, "a.jsonl", "\n".join(lines) + "\n"), label_column="label", id_column="id")
    assert df["row_number"].tolist() == [1, 3, 4, 5, 6, 7]
    assert df["error"].tolist() == [None, "bad_json", "bad_json", "missing_field", None, "malformed_row"]
    first = df.iloc[0]
    assert first["meta"] == {"n": None, "nested": {"k": [1, 2]}}
    assert first["external_id"] == "5"
    assert df.iloc[1]["raw"] == "{not json"
    assert df.iloc[4]["text"] == "bad  surrogate  nul"
    json.dumps(df["meta"].tolist())


def test_json_array_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="JSON Lines"):
        read_batches(write(tmp_path, "arr.json", '[{"text": "a"}]'), ReaderOptions())


def test_jsonl_unknown_column_lists_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "k.jsonl", '{"body": "x", "tag": "y"}\n')
    with pytest.raises(InputError, match="'body', 'tag'"):
        read_batches(path, ReaderOptions(text_column="text"))


# --- Parquet -------------------------------------------------------------------------------------


def test_parquet_types_and_chunks(tmp_path: Path) -> None:
    import datetime as dt

    table = pa.table(
        {
            "text": ["one", None, "three", ""],
            "label": [1, 2, None, 4],
            "score": [0.5, float("nan"), 1.0, None],
            "when": [dt.datetime(2024, 1, 2, 3, 4, 5)] * 4,
            "tags": [["a"], [], None, ["b", "c"]],
        }
    )
    path = tmp_path / "a.parquet"
    pq.write_table(table, path)
    frames = list(read_batches(path, ReaderOptions(label_column="label", chunk_rows=3)))
    assert [len(f) for f in frames] == [3, 1]
    df = pd.concat(frames, ignore_index=True)
    assert df["row_number"].tolist() == [1, 2, 3, 4]
    assert df["error"].tolist() == [None, "missing_field", None, "empty_text"]
    assert df["label"].tolist() == ["1", "2", None, "4"]
    assert df.iloc[0]["meta"] == {"score": 0.5, "when": "2024-01-02T03:04:05", "tags": ["a"]}
    assert df.iloc[1]["meta"]["score"] is None
    assert json.loads(df.iloc[0]["raw"])["text"] == "one"
    json.dumps(df["meta"].tolist())


def test_parquet_unknown_column(tmp_path: Path) -> None:
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), path)
    with pytest.raises(InputError, match="'body', 'n'"):
        read_batches(path, ReaderOptions(text_column="text"))
    assert read_all(path)["text"].tolist() == ["x"]  # the only string column


def test_corrupt_parquet_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Parquet"):
        read_batches(write(tmp_path, "bad.parquet", b"PAR1 not really"), ReaderOptions())


# --- plain text ----------------------------------------------------------------------------------


def test_txt_with_at_labels(tmp_path: Path) -> None:
    lines = [f"Sentence {i} mentions x@y.com .@{'positive' if i % 2 else 'neutral'}" for i in range(30)]
    lines.insert(5, "")
    lines.append("no label on this one")
    df = read_all(write(tmp_path, "fpb.txt", "\r\n".join(lines)))
    assert len(df) == 31
    assert df.iloc[0]["text"] == "Sentence 0 mentions x@y.com ." and df.iloc[0]["label"] == "neutral"
    assert df.iloc[-1]["error"] == "missing_field"
    assert 6 not in df["row_number"].tolist()  # the blank line is not a record


def test_txt_without_labels(tmp_path: Path) -> None:
    df = read_all(write(tmp_path, "plain.txt", "first line\n\n  \nwrite to me@home\nlast"))
    assert df["text"].tolist() == ["first line", "write to me@home", "last"]
    assert df["label"].isna().all()
    assert df["row_number"].tolist() == [1, 4, 5]


@pytest.mark.integration
def test_real_financial_phrasebank() -> None:
    if not PHRASEBANK.exists():
        pytest.skip("financial_phrasebank not present")
    counts = {"50Agree": 4846, "66Agree": 4217, "75Agree": 3453, "AllAgree": 2264}
    frames = {}
    for name, n in counts.items():
        df = read_all(PHRASEBANK / f"Sentences_{name}.txt")
        assert len(df) == n and df["error"].isna().all()
        assert set(df["label"]) == {"positive", "negative", "neutral"}
        frames[name] = df
    assert frames["66Agree"]["label"].value_counts().to_dict() == {"neutral": 2535, "positive": 1168, "negative": 514}
    # latin-1 and UTF-8-with-BOM copies of the same sentences decode to the same text.
    pairs = {name: set(zip(df["text"], df["label"], strict=True)) for name, df in frames.items()}
    assert pairs["66Agree"] <= pairs["50Agree"]
    assert pairs["AllAgree"] <= pairs["75Agree"] <= pairs["66Agree"]
    lossy = read_all(PHRASEBANK / "variant_Alexis-Fauxbaton_50Agree_lossy" / "Sentences_50Agree.txt")
    assert len(lossy) == 4846 and lossy["error"].isna().all()


@pytest.mark.integration
def test_real_csv_files_read_without_errors() -> None:
    tweets = DATA / "twitter_us_airline_sentiment" / "Tweets.csv"
    if not tweets.exists():
        pytest.skip("twitter_us_airline_sentiment not present")
    df = read_all(tweets, label_column="airline_sentiment", id_column="tweet_id")
    assert len(df) == 14640 and df["error"].isna().all()
    assert df["row_number"].tolist() == list(range(1, 14641))
    assert df["external_id"].str.fullmatch(r"\d{18}").all()


# --- streaming -----------------------------------------------------------------------------------


def test_200k_rows_stream_in_bounded_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("id,text,label\n")
        for i in range(200_000):
            fh.write(f'{i},"row {i}, a short sentence",{i % 3}\n')
    it = read_batches(path, ReaderOptions(label_column="label", id_column="id", chunk_rows=25_000))
    first = next(it)
    assert len(first) == 25_000
    sizes = [len(first)] + [len(f) for f in it]
    assert sizes == [25_000] * 8
    assert first["row_number"].iloc[-1] == 25_000


# --- format sniffing -----------------------------------------------------------------------------


def test_sniff_format(tmp_path: Path) -> None:
    for name, fmt in [
        ("a.csv", "csv"),
        ("a.TSV", "tsv"),
        ("a.tab", "tsv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json", "jsonl"),
        ("a.parquet", "parquet"),
        ("a.txt", "txt"),
    ]:
        assert sniff_format(tmp_path / name) == fmt
    assert sniff_format(write(tmp_path, "noext1", '{"text": 1}\n')) == "jsonl"
    assert sniff_format(write(tmp_path, "noext2", "a\tb\n1\t2\n")) == "tsv"
    assert sniff_format(write(tmp_path, "noext3", "a,b\n1,2\n3,4\n")) == "csv"
    phrases = "Just a sentence , with a comma .@neutral\nAnother .@positive\n"
    assert sniff_format(write(tmp_path, "noext4", phrases)) == "txt"
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "noext5")
    assert sniff_format(tmp_path / "noext5") == "parquet"


# --- never crash on bytes --------------------------------------------------------------------------

_UNCLEAN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_PIECES = [b"text", b",", b"\t", b'"', b"\n", b"\r", b"\r\n", b"{", b"}", b'"text":', b"@positive", b"\xff"]
_PIECES += [b"\xe9", b"\xc3\xa9", b"\x00", b"\x81", b"abc", b" ", b"[", b"\xef\xbb\xbf", b"label"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(_PIECES), max_size=60).map(b"".join)),
    fmt=st.sampled_from(["csv", "tsv", "jsonl", "txt"]),
    prefix=st.sampled_from([b"", b"text,label\n", b'{"text": "a"}\n']),
)
def test_arbitrary_bytes_never_crash(tmp_path: Path, data: bytes, fmt: str, prefix: bytes) -> None:
    path = tmp_path / f"fuzz.{fmt}"
    path.write_bytes(prefix + data)
    try:
        frames = list(read_batches(path, ReaderOptions(chunk_rows=3)))
    except InputError:
        return
    for frame in frames:
        for row in rows(frame):
            assert row["error"] in ERROR_REASONS or (row["error"] is None and row["text"])
            for key in ("text", "label", "external_id", "group"):
                if row[key] is not None:
                    assert not _UNCLEAN.search(row[key])
            for key in ("label", "external_id", "group"):  # the ingest stores these as they come
                assert row[key] is None or (type(row[key]) is str and row[key] == row[key].strip() and row[key])
            assert "\x00" not in row["raw"]
            row["raw"].encode("utf-8")
            json.dumps(row["meta"]).encode("utf-8")


def _write_frame(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_label_id_and_group_are_stripped_strings_or_none(tmp_path: Path, fmt: str) -> None:
    """The ingest writes label, external id and group as the readers give them: a stripped, non-empty string or
    None (blank, missing and NaN become None; numbers become their text)."""
    frame = pd.DataFrame({
        "text": ["a", "b", "c", "d", "e"],
        "label": [" pos ", "", "   ", None, "neg"],
        "id": [" 7", "x1 ", "", None, "9"],
        "group": ["g", None, " ", "h ", ""],
    })
    columns = dict(label_column="label", id_column="id", group_column="group")
    got = read_all(_write_frame(frame, tmp_path / f"cols.{fmt}"), **columns)
    assert got["label"].tolist() == ["pos", None, None, None, "neg"]
    assert got["external_id"].tolist() == ["7", "x1", None, None, "9"]
    assert got["group"].tolist() == ["g", None, None, "h", None]
    numbers = pd.DataFrame({"text": ["a", "b"], "label": [1, 2], "id": [10.0, float("nan")], "group": [True, None]})
    got = read_all(_write_frame(numbers, tmp_path / f"nums.{fmt}"), **columns)
    for key in ("label", "external_id", "group"):
        assert all(v is None or (type(v) is str and v == v.strip() and v) for v in got[key]), key
    assert got["label"].tolist() == ["1", "2"] and got["external_id"].tolist()[1] is None


def test_undecodable_header_names_are_repaired(tmp_path: Path) -> None:
    df = read_all(write(tmp_path, "h.csv", b"text,caf\xe9\x81\nhello,1\n"))
    assert df.iloc[0]["meta"] == {"café": "1"}


@pytest.mark.parametrize("seed", range(6))
def test_every_record_once_with_multiline_fields_and_bad_rows_across_chunks(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if seed % 2 else "\n")
    writer.writerow(["id", "text", "label"])
    expected: list[tuple[str | None, str | None]] = []
    for i in range(150):
        if rng.random() < 0.04:
            buffer.write(f"{i},bad,row,extra\n")
            expected.append(("malformed_row", None))
            continue
        text = rng.choice(["plain", "with, comma", "multi\nline", 'a "quote"', "tab\there", "é ü", "  pad  "])
        writer.writerow([i, f"{text} {i}", rng.choice("abc")])
        expected.append((None, f"{text} {i}".strip()))
    path = write(tmp_path, "mixed.csv", buffer.getvalue())
    chunk_rows = rng.choice([1, 7, 40, 1000])
    df = read_all(path, label_column="label", id_column="id", chunk_rows=chunk_rows)
    assert df["row_number"].tolist() == list(range(1, len(expected) + 1))
    assert list(zip(df["error"], df["text"], strict=True)) == expected
