"""Decode input files without guessing blindly and without ever raising on bytes.

Real datasets arrive as UTF-8, UTF-8 with a BOM, latin-1, cp1252 or Mac Roman, sometimes mixed
within one file, with CRLF, LF or old-Mac CR line ends and stray carriage returns inside fields.
`detect_encoding` picks the codec from evidence, `open_text` yields a stream with one line-end
convention and undecodable bytes kept as surrogate escapes, and `repair_text` turns a field into
clean text (mojibake fixed, surrogates and control characters gone).
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from pathlib import Path
from typing import TextIO

import ftfy
from charset_normalizer import from_bytes
from ftfy.badness import BADNESS_RE
from ftfy.chardata import LIGATURES

__all__ = [
    "detect_encoding",
    "open_text",
    "open_utf8_bytes",
    "repair_text",
    "needs_repair",
    "looks_binary",
    "describe_binary",
    "safe_raw",
]

_CHARSET_NORMALIZER_NAMES = {"cp1252": "cp1252", "latin_1": "latin-1", "mac_roman": "mac_roman"}
_TAIL_BYTES = 1 << 18
_READ_CHARS = 1 << 16

# C0 controls except \t and \n, DEL, C1 controls and every surrogate code point.
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_ASCII_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Characters some ftfy step (with `_FTFY_CONFIG`) would change even in text without mojibake.
_FTFY_TRIGGER_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u206a-\u206f\ufeff\ufff9-\ufffc"
    + "".join(re.escape(chr(c)) for c in sorted(LIGATURES))
    + "]"
)


def _mojibake_charset() -> re.Pattern[str]:
    """Characters that single-byte decodings (the ones ftfy can undo) produce from bytes >= 0x80."""
    import ftfy.bad_codecs  # noqa: F401  (registers the sloppy-* codecs)
    from ftfy.chardata import CHARMAP_ENCODINGS

    chars = {c for enc in CHARMAP_ENCODINGS for c in bytes(range(0x80, 0x100)).decode(enc, "ignore")}
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]")


# Every pattern of ftfy's BADNESS_RE (its mojibake test) needs one of these characters (what single-byte decodings
# make of bytes >= 0x80, or U+FFFD) and spans at most _BAD_WIDTH characters, without lookarounds;
# tests/test_encoding.py checks both against the installed ftfy.
_MOJIBAKE_CHAR_RE = _mojibake_charset()
_BAD_GATE_RE = re.compile(_MOJIBAKE_CHAR_RE.pattern[:-1] + "\ufffd]")
_BAD_WIDTH = 7

_ESCAPED_BYTES_RE = re.compile("[\udc80-\udcff]+")

# Only repairs: no HTML unescaping, quote uncurling or width folding, which would change ASCII
# and non-ASCII rows differently (ASCII rows skip repair entirely).
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    uncurl_quotes=False,
    fix_character_width=False,
    explain=False,
)

_MAGIC = (
    (b"PAR1", "a Parquet file"),
    (b"PK\x03\x04", "a ZIP archive (or an Excel .xlsx workbook)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"BZh", "a bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"(\xb5/\xfd", "a zstd-compressed file"),
    (b"%PDF", "a PDF document"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office document"),
    (b"\x89PNG", "a PNG image"),
    (b"SQLite format 3", "an SQLite database"),
)


def _read_samples(path: Path, sample_bytes: int) -> tuple[bytes, bytes]:
    """Head of the file and, for big files, its tail (evidence from both ends)."""
    with open(path, "rb") as fh:
        head = fh.read(sample_bytes)
        tail = b""
        if len(head) == sample_bytes:
            fh.seek(0, io.SEEK_END)
            size = fh.tell()
            start = max(sample_bytes, size - _TAIL_BYTES)
            if start < size:
                fh.seek(start)
                tail = fh.read()
    return head, tail


def _is_utf8(data: bytes, *, cut_start: bool, cut_end: bool) -> bool:
    """Strict UTF-8, or UTF-8 with a few stray bytes (a mixed file: `repair_text` re-reads those)."""
    if cut_start:
        skip = 0
        while skip < 3 and skip < len(data) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    if cut_end:
        for back in range(1, min(4, len(data)) + 1):
            lead = data[-back]
            if lead >= 0xC0:  # a multibyte character may be cut: drop it
                data = data[:-back]
                break
            if lead < 0x80:
                break
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        stray = len(re.findall("[\udc80-\udcff]", text))
        valid = len(re.findall("[^\x00-\x7f\udc80-\udcff]", text))
        return valid >= 2 * stray
    return True


def _char_score(c: str, prev: str, nxt: str) -> float:
    """How plausible one decoded non-ASCII character is in its context."""
    if c == "\ufffd" or "\x80" <= c <= "\x9f":
        return -5.0
    if c.isalpha():
        if c.islower():
            return 1.0 if (prev.isalpha() or nxt.isalpha()) else -1.0
        if prev.isalpha() and prev.islower():
            return -2.0
        return 1.0 if nxt.isalpha() else 0.0
    if c in "\u2019\u2018":
        return 2.0 if (prev.isalpha() or nxt.isalpha()) else 0.0
    if c in "\u201c\u201d\u00ab\u00bb\u201e":
        return 2.0 if not (prev.isalnum() and nxt.isalnum()) else -1.0
    if c in "\u2013\u2014":
        if prev.isspace() or nxt.isspace() or prev.isdigit():
            return 2.0
        return -1.0 if (prev.isalpha() and nxt.isalpha()) else 0.0
    if c in "\u2026\u20ac\u00a3\u00a9\u00ae\u00b0\u00a0":
        return 1.0
    if prev.isalpha() and nxt.isalpha():
        return -2.0
    return -0.5 if unicodedata.category(c)[0] == "S" else 0.0


def _plausibility(text: str) -> float:
    score = 0.0
    n = len(text)
    for m in re.finditer(r"[^\x00-\x7f]", text):
        i = m.start()
        prev = text[i - 1] if i > 0 else " "
        nxt = text[i + 1] if i + 1 < n else " "
        score += _char_score(text[i], prev, nxt)
    return score


def _choose_single_byte(data: bytes) -> str:
    has_c1_bytes = any(0x80 <= b <= 0x9F for b in set(data))
    # Without bytes 0x80-0x9F cp1252 and latin-1 decode identically; call it latin-1.
    candidates = ("cp1252", "mac_roman") if has_c1_bytes else ("latin-1", "mac_roman")
    scores = {enc: _plausibility(data.decode(enc, errors="replace")) for enc in candidates}
    high_bytes = sum(1 for b in data if b >= 0x80) or 1
    try:
        best = from_bytes(data, cp_isolation=list(_CHARSET_NORMALIZER_NAMES)).best()
    except Exception:  # evidence only; a failure here must not stop reading
        best = None
    western = candidates[0]
    if best is not None:
        voted = _CHARSET_NORMALIZER_NAMES.get(best.encoding)
        if voted in ("cp1252", "latin-1"):
            voted = western  # the two differ only on bytes 0x80-0x9F, which the scores judge
        if voted in scores:
            scores[voted] += 0.05 * high_bytes
    # Mac Roman is rare: it must win clearly, not on a tie.
    if scores["mac_roman"] > scores[western] + max(2.0, 0.1 * high_bytes):
        return "mac_roman"
    return western


def detect_encoding(path: Path, *, sample_bytes: int = 1 << 20) -> str:
    """Codec name for `path`: utf-8-sig, utf-16, utf-8, cp1252, latin-1 or mac_roman.

    UTF-8 is accepted if the head (and the tail of big files) decode as UTF-8, allowing a few stray
    bytes among many valid multibyte characters (a mixed file; `repair_text` re-reads the strays).
    Otherwise the single-byte codec whose decoding reads most like text wins, with
    charset_normalizer's vote (restricted to those codecs) as extra evidence.
    """
    head, tail = _read_samples(Path(path), sample_bytes)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head_cut = len(head) == sample_bytes
    if _is_utf8(head, cut_start=False, cut_end=head_cut) and (
        not tail or _is_utf8(tail, cut_start=True, cut_end=False)
    ):
        return "utf-8"
    return _choose_single_byte(head + b"\n" + tail if tail else head)


def looks_binary(data: bytes) -> bool:
    """True when a sample is clearly not text: a known magic number or many control bytes (>5%)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    if describe_binary(data) is not None:
        return True
    if not data:
        return False
    controls = sum(data.count(bytes([b])) for b in range(32) if b not in (9, 10, 12, 13))
    return controls > max(32, 0.05 * len(data))  # a few junk bytes in a small text file are rows to quarantine


def describe_binary(data: bytes) -> str | None:
    """What a known binary file type looks like, from its magic number."""
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    return None


class _NormalizedText(io.TextIOBase):
    """Decoded text with "\\n" line ends only.

    "\\r\\n" becomes "\\n"; a bare "\\r" becomes a space (a stray CR inside a field must not split
    the row) unless the file uses "\\r" as its only line end (old Mac), where it becomes "\\n".
    """

    def __init__(self, raw: io.TextIOWrapper, *, cr_is_newline: bool, encoding: str) -> None:
        super().__init__()
        self._raw = raw
        self._cr_is_newline = cr_is_newline
        self._encoding = encoding
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._pending_cr = False
        self._first = True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> str:
        chunk = self._raw.read(_READ_CHARS)
        if self._first:
            self._first = False
            if chunk.startswith("\ufeff"):
                chunk = chunk[1:]
        if self._pending_cr:
            chunk = "\r" + chunk
            self._pending_cr = False
        if not chunk:
            self._eof = True
            return ""
        if chunk.endswith("\r"):
            # Wait for the next character to know whether this is half of "\r\n".
            nxt = self._raw.read(1)
            if nxt:
                chunk += nxt
                if nxt == "\r":
                    chunk = chunk[:-1]
                    self._pending_cr = True
        chunk = chunk.replace("\r\n", "\n")
        return chunk.replace("\r", "\n" if self._cr_is_newline else " ")

    def _fill(self) -> bool:
        while not self._eof:
            chunk = self._next_chunk()
            if chunk:
                self._buf = self._buf[self._pos :] + chunk
                self._pos = 0
                return True
        return False

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            parts = [self._buf[self._pos :]]
            self._buf, self._pos = "", 0
            while not self._eof:
                parts.append(self._next_chunk())
            return "".join(parts)
        while len(self._buf) - self._pos < size and self._fill():
            pass
        out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        while True:
            end = self._buf.find("\n", self._pos)
            if end >= 0:
                end += 1
                break
            if not self._fill():
                end = len(self._buf)
                break
        if size is not None and size >= 0:
            end = min(end, self._pos + size)
        line = self._buf[self._pos : end]
        self._pos = end
        return line

    def __next__(self) -> str:  # type: ignore[override]
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        self._raw.close()
        super().close()


def _uses_cr_line_ends(path: Path) -> bool:
    """Old-Mac file: bare CRs outnumber LFs (a few stray CRs in fields do not count)."""
    with open(path, "rb") as fh:
        sample = fh.read(1 << 20)
    crlf = sample.count(b"\r\n")
    return sample.count(b"\r") - crlf > sample.count(b"\n")


def open_text(path: Path, *, encoding: str | None = None) -> TextIO:
    """Open `path` as decoded text with "\\n" line ends; undecodable bytes never raise.

    Undecodable bytes become surrogate escapes (U+DC80..U+DCFF) for `repair_text` to handle.
    """
    path = Path(path)
    enc = encoding or detect_encoding(path)
    raw = io.TextIOWrapper(open(path, "rb"), encoding=enc, errors="surrogateescape", newline="")
    stream = _NormalizedText(raw, cr_is_newline=_uses_cr_line_ends(path), encoding=enc)
    return stream  # type: ignore[return-value]


class _Utf8Bytes(io.RawIOBase):
    """UTF-8 bytes of a text stream, surrogate escapes turned back into the original bytes."""

    def __init__(self, text: TextIO) -> None:
        super().__init__()
        self._text = text
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        want = len(buffer)
        while len(self._pending) < want:
            chunk = self._text.read(max(want, _READ_CHARS))
            if not chunk:
                break
            self._pending += chunk.encode("utf-8", "surrogateescape")
        n = min(want, len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._text.close()
        super().close()


def open_utf8_bytes(path: Path, *, encoding: str | None = None) -> io.BufferedReader:
    """Like `open_text`, re-encoded as UTF-8 bytes (for parsers that want bytes).

    Read them back with errors="surrogateescape": bytes that were undecodable stay undecodable.
    """
    return io.BufferedReader(_Utf8Bytes(open_text(path, encoding=encoding)), buffer_size=1 << 18)


def _is_bad(s: str) -> bool:
    """ftfy's `is_bad(s)`, searched only around the characters every one of its patterns needs.

    Why: `is_bad` tries some 37 patterns at every position (about 30 us for a tweet), and a text with one curly
    quote needs only the few positions around it. A match must contain a gate character at some position p and is
    at most _BAD_WIDTH long, so it lies within [p - _BAD_WIDTH, p + _BAD_WIDTH]; `search(s, pos, endpos)` keeps
    "^" for the real start of the text, so a window finds exactly the matches of the whole text that lie in it.
    """
    n, lo, hi = len(s), 0, -1
    search = BADNESS_RE.search
    for m in _BAD_GATE_RE.finditer(s):
        p = m.start()
        if hi >= 0 and p - _BAD_WIDTH <= hi:
            hi = p + _BAD_WIDTH + 1
            continue
        if hi >= 0 and search(s, lo, min(n, hi)):
            return True
        lo, hi = max(0, p - _BAD_WIDTH), p + _BAD_WIDTH + 1
    return hi >= 0 and search(s, lo, min(n, hi)) is not None


def _decode_escaped(run: str) -> str:
    data = bytes(ord(c) - 0xDC00 for c in run)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="ignore")


def needs_repair(s: str) -> bool:
    """False for plain printable ASCII (plus tab/newline), which `repair_text` returns unchanged."""
    if s.isascii():
        return not s.isprintable() and _ASCII_CONTROL_RE.search(s) is not None
    return True


def repair_text(s: str) -> str:
    """Clean one field: escaped bytes re-read as cp1252, mojibake fixed, controls removed.

    Never raises; the result has no surrogates and no C0/C1 control characters except \\n and \\t.
    """
    if s.isascii() and s.isprintable():
        return s
    if not _FTFY_TRIGGER_RE.search(s):
        # Without trigger characters ftfy (with `_FTFY_CONFIG`) changes only mojibake and non-NFC text.
        if s.isascii() or (unicodedata.is_normalized("NFC", s) and not _is_bad(s)):
            return s
    elif _SURROGATE_RE.search(s):
        # Rejoin surrogate pairs split into two code points, then re-read escaped raw bytes.
        s = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        s = _ESCAPED_BYTES_RE.sub(lambda m: _decode_escaped(m.group()), s)
        s = _SURROGATE_RE.sub("", s)
    try:
        s = ftfy.fix_text(s, _FTFY_CONFIG)
    except Exception:  # ftfy is a best effort; the control-char pass below still runs
        pass
    return _CONTROL_RE.sub("", s)


def safe_raw(s: str) -> str:
    """A raw payload fit for storage: valid UTF-8, no NUL; undecodable bytes shown as \\xNN."""
    if not s.isascii():
        try:
            data = s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = s.encode("utf-8", "surrogatepass")
        s = data.decode("utf-8", "backslashreplace")
    return s.replace("\x00", "\\x00") if "\x00" in s else s
