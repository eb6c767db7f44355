"""Encoding detection, decoding streams and field repair on generated and real files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import ftfy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.encoding import (
    _CONTROL_RE,
    _FTFY_CONFIG,
    detect_encoding,
    looks_binary,
    open_text,
    open_utf8_bytes,
    repair_text,
    safe_raw,
)
from tests.conftest import shared_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHRASEBANK = DATA / "financial_phrasebank"

SENTENCES = {
    "french": "Le cœur a ses raisons. Où est l'hôtel ? Ça va très bien, merci.\n",
    "german": "Über die Brücke zum Bäcker; größer als das Haus, sagte Jürgen.\n",
    "spanish": "El niño comió en la montaña. ¿Cómo estás? Mañana, señor García.\n",
    "finnish": "Seppälä and Jyväskylä report: Weckström sells stake in Åland unit.\n",
    "typography": "He said “don’t go” – it’s only £5 … really.\n",
}
# Only characters each codec can represent; cp1252 texts need bytes 0x80-0x9F to be told apart.
CASES = [
    ("utf-8", "utf-8", SENTENCES["german"] + "Emoji too 😀 and “quotes”.\n"),
    ("utf-8-sig", "utf-8-sig", SENTENCES["french"] + SENTENCES["typography"]),
    ("latin-1", "latin-1", SENTENCES["german"] + SENTENCES["spanish"]),
    ("latin-1", "latin-1", SENTENCES["finnish"]),
    ("cp1252", "cp1252", SENTENCES["typography"] + SENTENCES["finnish"]),
    ("cp1252", "cp1252", SENTENCES["french"] + "Price: 10€ — “special” offer.\n"),
    ("mac_roman", "mac_roman", SENTENCES["german"] + SENTENCES["typography"]),
    ("mac_roman", "mac_roman", SENTENCES["spanish"]),
    ("mac_roman", "mac_roman", SENTENCES["french"] + SENTENCES["finnish"]),
]


@pytest.mark.parametrize(("codec", "expected", "text"), CASES)
def test_detects_each_encoding_and_decodes_exactly(tmp_path: Path, codec: str, expected: str, text: str) -> None:
    path = tmp_path / "sample.txt"
    path.write_bytes(text.encode(codec))
    assert detect_encoding(path) == expected
    with open_text(path) as fh:
        assert fh.read() == text


def test_pure_ascii_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"plain ascii\n")
    assert detect_encoding(path) == "utf-8"


def test_multibyte_char_cut_at_sample_end_is_still_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt"
    path.write_bytes(b"a" * 1023 + "é".encode() + b"tail\n")  # é spans bytes 1023-1024
    assert detect_encoding(path, sample_bytes=1024) == "utf-8"


def test_latin1_bytes_late_in_a_big_file_are_found_in_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    path.write_bytes(b"ascii line\n" * 20_000 + "Größe café naïve\n".encode("latin-1"))
    assert detect_encoding(path, sample_bytes=4096) == "latin-1"


def test_mostly_utf8_file_with_stray_cp1252_bytes_stays_utf8_and_repairs(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    path.write_bytes("“quoted” naïve ".encode() * 5 + b"caf\xe9\n")
    assert detect_encoding(path) == "utf-8"
    with open_text(path) as fh:
        line = fh.read()
    assert "\udce9" in line
    assert repair_text(line).endswith("café\n")


def test_utf16_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "u16.txt"
    path.write_bytes("text\nhéllo\n".encode("utf-16"))
    assert detect_encoding(path) == "utf-16"
    with open_text(path) as fh:
        assert fh.read() == "text\nhéllo\n"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Sentences_66Agree.txt", "latin-1"),
        ("Sentences_75Agree.txt", "latin-1"),
        ("Sentences_AllAgree.txt", "latin-1"),
        ("Sentences_50Agree.txt", "utf-8-sig"),
        ("variant_Alexis-Fauxbaton_50Agree_lossy/Sentences_50Agree.txt", "utf-8"),
    ],
)
def test_real_phrasebank_encodings(name: str, expected: str) -> None:
    path = PHRASEBANK / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    assert detect_encoding(path) == expected


# --- open_text ----------------------------------------------------------------------------------


def _read(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    with open_text(path) as fh:
        return fh.read()


def test_crlf_becomes_lf_and_bare_cr_a_space(tmp_path: Path) -> None:
    assert _read(tmp_path, b"a,b\r\nx\ry,1\r\nz,2\r\n") == "a,b\nx y,1\nz,2\n"
    assert _read(tmp_path, b"a,b\nx\ry,1\n") == "a,b\nx y,1\n"


def test_old_mac_cr_only_file_reads_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "mac.txt"
    path.write_bytes(b"one\rtwo\rthree\r")
    with open_text(path) as fh:
        assert list(fh) == ["one\n", "two\n", "three\n"]


def test_crlf_split_across_read_chunks(tmp_path: Path) -> None:
    from pipelines.encoding import _READ_CHARS

    for offset in (-3, -2, -1, 0, 1):
        body = b"x" * (_READ_CHARS + offset) + b"\r\r\nnext\rlast\r\n"
        text = _read(tmp_path, body)
        assert text == "x" * (_READ_CHARS + offset) + " \nnext last\n"


def test_bom_is_dropped_even_with_explicit_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhead\n")
    with open_text(path, encoding="utf-8") as fh:
        assert fh.read() == "head\n"


def test_undecodable_bytes_never_raise_and_round_trip_as_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes("ok é ".encode() + b"\xff\xfe\x80 end\n")
    with open_text(path, encoding="utf-8") as fh:
        text = fh.read()
    assert "\udcff" in text
    with open_utf8_bytes(path, encoding="utf-8") as fh:
        assert fh.read() == "ok é ".encode() + b"\xff\xfe\x80 end\n"


def test_readline_and_iteration_agree(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"a\r\nb\n\nc")
    with open_text(path) as fh:
        assert fh.readline() == "a\n"
        assert list(fh) == ["b\n", "\n", "c"]


def test_looks_binary() -> None:
    assert looks_binary(bytes(range(256)) * 10)
    assert looks_binary(b"PAR1" + b"x" * 100)
    assert not looks_binary(b"plain text, with commas\n" * 10)
    assert not looks_binary("héllo\n".encode("utf-16"))


# --- repair_text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("cafÃ©", "café"),  # UTF-8 read as latin-1
        ("Telenet issues a Ã‚â‚¬510 million facility", "Telenet issues a €510 million facility"),
        ("caf\udce9", "café"),  # surrogate-escaped cp1252 byte in a UTF-8 file
        ("\udc93quoted\udc94", "“quoted”"),
        ("a\x00b\x07c\x1bd\x7fe", "abcde"),
        ("lone \ud800 high", "lone  high"),
        ("pair \ud83d\ude00", "pair 😀"),
        ("keep\ttab\nand newline", "keep\ttab\nand newline"),
        ("crlf\r\nline", "crlf\nline"),
        ("\x80100", "€100"),  # C1 control meant as cp1252
        ("plain ascii", "plain ascii"),
    ],
)
def test_repair_text_examples(broken: str, fixed: str) -> None:
    assert repair_text(broken) == fixed


_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF)))
def test_repair_text_never_raises_and_leaves_no_surrogates_or_controls(s: str) -> None:
    out = repair_text(s)
    assert isinstance(out, str)
    assert not _BAD.search(out)
    out.encode("utf-8")  # storable


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_repair_text_fast_paths_match_ftfy(s: str) -> None:
    """Skipping ftfy for clean text must never change the result."""
    assert repair_text(s) == _CONTROL_RE.sub("", ftfy.fix_text(s, _FTFY_CONFIG))


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_ascii_is_returned_unchanged(s: str) -> None:
    assert repair_text(s) is s


def test_safe_raw_shows_undecodable_bytes_and_no_nul() -> None:
    assert safe_raw("caf\udce9\x00!") == "caf\\xe9\\x00!"
    assert safe_raw("lone \ud800") == "lone \\xed\\xa0\\x80"
    assert safe_raw("plain") == "plain"


def test_windowed_badness_check_rests_on_ftfy_patterns_as_installed() -> None:
    """`_is_bad` searches only near gate characters: it is exact while every BADNESS_RE pattern needs one, spans at
    most _BAD_WIDTH characters and looks around nothing. Checked here against the installed ftfy."""
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    from ftfy.badness import BADNESS_RE

    from pipelines.encoding import _BAD_GATE_RE, _BAD_WIDTH

    parsed = _parser.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    assert parsed.getwidth()[1] <= _BAD_WIDTH
    (op, (_, alternatives)), = parsed.data
    assert op == C.BRANCH

    def items(seq: Any) -> list[Any]:
        out = []
        for op, av in seq:
            assert op not in (C.ASSERT, C.ASSERT_NOT, C.GROUPREF, C.AT) or (op == C.AT and av == C.AT_BEGINNING)
            out.extend(items(av[3]) if op == C.SUBPATTERN else [(op, av)])
        return out

    def members(op: Any, av: Any) -> set[str] | None:
        if op == C.LITERAL:
            return {chr(av)}
        if op == C.IN and all(o in (C.LITERAL, C.RANGE) for o, _ in av):
            return {chr(c) for o, a in av for c in ([a] if o == C.LITERAL else range(a[0], a[1] + 1))}
        return None

    for alt in alternatives:
        assert any((m := members(op, av)) and all(_BAD_GATE_RE.fullmatch(c) for c in m) for op, av in items(alt)), alt


_MOJIBAKE_PIECES = ["Ã©", "â€™", "Ã ", "Â£", "ðŸ˜€", "Ã¼", "\x85", "��", "œ.", "Ð¿Ñ€Ð¸", "√©", "вЂ™", "’", "é", "Ω"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_MOJIBAKE_PIECES), st.text(max_size=12)), max_size=12))
def test_windowed_badness_check_equals_ftfy(parts: list[str]) -> None:
    from ftfy.badness import is_bad

    from pipelines.encoding import _is_bad

    s = "".join(parts)
    assert _is_bad(s) == is_bad(s)


def test_windowed_badness_check_equals_ftfy_on_real_text() -> None:
    from ftfy.badness import is_bad

    from pipelines.encoding import _is_bad

    texts = [
        "I can’t believe it… — “great” service", "Café crème à 5 €", "Ã©tÃ© trÃ¨s bien", "donâ€™t", "x" * 50 + "Ã ",
        "Ã " + "x" * 50, "naïve façade", "ÐŸÑ€Ð¸Ð²ÐµÑ‚", "price: 5½ ± 2", "Ω ≈ 3 √2", "œuvre", "œ!",
    ]
    import pandas as pd

    tweets = pd.read_csv(shared_data("twitter_us_airline_sentiment", "Tweets.csv"), usecols=["text"])["text"]
    texts += [t for t in tweets.dropna().astype(str) if not t.isascii()]
    texts += [t.encode("utf-8").decode("cp1252", "replace") for t in texts[:2000]]  # real mojibake
    mismatches = [t for t in texts if _is_bad(t) != is_bad(t)]
    assert not mismatches, mismatches[:5]
