"""PII masking with typed placeholders, run on cleaned text before any text leaves the machine.

Each type is replaced by ``<TYPE>`` and counted. Types run in this order, so that the strict, checksummed
patterns claim their digits before the looser ones see them:

1. ``EMAIL``: ``local@domain.tld`` (RFC 5322 local part, Unicode letters allowed; a superset of the usual
   ``[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}``, so no such email survives).
2. ``IBAN``: country code + 2 check digits + BBAN, with or without single spaces, case-insensitive; the country
   must be in the IBAN registry with its exact length, and the mod-97 checksum must hold (a random candidate
   passes by chance 1 time in 97, and the length table cuts that further).
3. ``CARD``: any run of digits joined by single spaces or dashes (ASCII or Unicode) with 13-19 digits in all
   that passes the Luhn check (about 1 in 10 random runs does: long digit lists can be over-masked, never
   under-masked). In a longer run, a card-shaped part (one 13-19 digit group, or 4-4-4-4(-1..3), 4-6-5 or
   4-6-4 groups) is masked on its own: ``4111 1111 1111 1111 2023`` -> ``<CARD> 2023``.
4. ``SSN``: ``ddd-dd-dddd`` with a valid area (not 000, 666 or 9xx), group (not 00) and serial (not 0000); an
   undashed or space-separated 9-digit SSN only with ``SSN`` / ``social security`` in the 30 characters before.
5. ``IP``: IPv6 validated by `ipaddress`, with at least three groups or an embedded IPv4 (so ``::1`` and
   ratios like ``10::1`` stay); dotted IPv4 with valid octets (``1.2.3.4`` version strings are masked too).
6. ``PHONE``: North American numbers with separators (``555-123-4567``, ``555.123.4567``, ``(555) 123-4567``,
   ``+1 555 123 4567``, ``1-800-335-2247``; the area code starts with 2-9), ten undivided digits only after
   ``+1`` or a phone word (call, phone, tel, mobile, cell, text, fax, whatsapp) in the 30 characters before;
   international ``+CC`` numbers (country code not starting with 0, space/dash groups, 8-15 digits in all).
   Amounts (``1,234,567``), dates (``2023-04-27``), times and years never have that shape.
7. ``ROUTING``: 9 undivided digits with a valid ABA checksum and Federal Reserve prefix, *and* ``routing``,
   ``ABA``, ``RTN`` or ``transit`` in the 40 characters before. A checksum-valid 9-digit number alone is not
   enough: 1 in 10 random 9-digit numbers (order and ticket numbers) passes the checksum.
8. ``ACCOUNT``: 6-17 digits (single spaces/dashes allowed) with ``account``, ``acct``, ``a/c`` or ``acc`` in the
   40 characters before; never a date, an amount (``$1234567``, ``1234567.89``, ``12%``) or digits glued to
   letters, so already-masked forms like ``XXXX1234`` or ``****1234`` stay as they are. A 16-digit number that
   fails Luhn is therefore an ``ACCOUNT`` next to "account" and left alone elsewhere.

Masking repeats until nothing changes (a mask can expose a neighbour, e.g. an IBAN glued to a card number); each
change removes digits, ``@`` or ``:``, so it ends, and ``mask_pii`` is idempotent. Texts without ``@``, ``:``,
three dots or a cluster of six digits skip every pattern, which keeps the usual short text at a few
microseconds. Counts are per type and list only types that occurred.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from curation.errors import ConfigError, InputError

__all__ = [
    "PII_TYPES",
    "mask_pii",
    "mask_batch",
    "mask_each",
    "luhn_valid",
    "iban_valid",
    "aba_routing_valid",
    "ssn_valid",
]

PII_TYPES = ("EMAIL", "CARD", "IBAN", "SSN", "PHONE", "ROUTING", "ACCOUNT", "IP")

# Order in which the types run (see module docstring).
_ORDER = ("EMAIL", "IBAN", "CARD", "SSN", "IP", "PHONE", "ROUTING", "ACCOUNT")

# IBAN registry (SWIFT, release 2024): country code -> total length.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_ATEXT = r"[\w.!#$%&'*+/=?^`{|}~-]"  # RFC 5322 local-part characters
_EMAIL = re.compile(rf"(?<!{_ATEXT}){_ATEXT}+@[\w.-]+\.[^\W\d_]{{2,}}")

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?=(?: ?[A-Za-z0-9]){11})")

_CARD_SEPARATORS = " \\-\u2010\u2011\u2012\u2013\u2014\u2212"  # space, hyphen-minus, Unicode dashes, minus
_DIGIT_RUN = re.compile(rf"(?<!\d)\d(?:[{_CARD_SEPARATORS}]?\d){{12,}}")
_SEPARATOR_RE = re.compile(rf"[{_CARD_SEPARATORS}]")
_GROUP = re.compile(r"\d+")

_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
_SSN_NINE = re.compile(r"(?<![\w-])\d{3}[ -]?\d{2}[ -]?\d{4}(?![\w-])")
_SSN_WORDS = re.compile(r"(?i)(?<!\w)(?:ssn|ss#|social security)")

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.[0-9])")
# Every IPv4 address holds this (an octet's last digit, the second octet, the third's first digit); a quick scan for
# it skips the full pattern, which starts with a lookbehind and is tried at every position, on most texts.
_IPV4_HINT = re.compile(r"\d\.\d{1,3}\.\d")
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
)

_PHONE_END = r"(?!\w)(?![.-]?\d)"
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # US with area code in parentheses, optional +1 / 1 prefix
    r"(?:\+1[ .-]?|1[ .-])?\(\s?[2-9]\d{2}\s?\)[ .-]?\d{3}[ .-]?\d{4}"
    # US with separators
    r"|(?:\+1[ .-]?|1[ .-])?[2-9]\d{2}[ .-]\d{3}[ .-]\d{4}"
    # US with +1 and ten undivided digits
    r"|\+1[ .-]?[2-9]\d{9}"
    r")" + _PHONE_END
)
_PHONE_INTL = re.compile(r"(?<![\w+])\+[2-9]\d{0,2}(?:[ -]?(?:\(\d{1,4}\)|\d{1,4})){2,7}" + _PHONE_END)
_PHONE_BARE = re.compile(r"(?<![\w+$€£¥.,])[2-9]\d{9}" + _PHONE_END)
_PHONE_WORDS = re.compile(r"(?i)(?<!\w)(?:call|phone|tel|telephone|mobile|cell|text|fax|whatsapp|ph)(?!\w)")

_NINE = re.compile(r"(?<![\w*$€£¥])(?<!\d[.,])\d{9}(?![\w%])(?![.,]\d)")
_ROUTING_WORDS = re.compile(r"(?i)(?<!\w)(?:routing|aba|rtn|transit)(?!\w)")

_ACCOUNT_RUN = re.compile(r"(?<![\w*\u2022$€£¥])(?<!\d[.,/:])\d(?:[ -]?\d){5,16}(?![\w%])(?![.,/:]\d)")
_ACCOUNT_WORDS = re.compile(r"(?i)(?<!\w)(?:accounts?|acct|a/c|acc)(?!\w)")
_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{4}")

# A text needs the full patterns only if it has an "@", a ":" pair, three dots, or six digits close together.
_DIGIT_CLUSTER = re.compile(r"\d(?:[^\d\n]{0,3}\d){5}")

_PLACEHOLDER_SLASH = re.compile(r"(<(?:" + "|".join(PII_TYPES) + r")>)\u0338+")


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check of a string of decimal digits; False for anything else or fewer than 2 digits."""
    if len(digits) < 2 or not digits.isdecimal():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(s: str) -> bool:
    """IBAN check: registry country, its exact length, check digits 02-98 and mod-97 == 1; spaces ignored."""
    iban = s.replace(" ", "").upper()
    if not iban.isascii() or not iban.isalnum() or _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    if not iban[2:4].isdigit() or not 2 <= int(iban[2:4]) <= 98:
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def aba_routing_valid(digits: str) -> bool:
    """ABA routing number: 9 digits, Federal Reserve prefix (00-12, 21-32, 61-72, 80), weights 3-7-1 checksum."""
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    prefix = int(digits[:2])
    if not (prefix <= 12 or 21 <= prefix <= 32 or 61 <= prefix <= 72 or prefix == 80):
        return False
    d = [int(c) for c in digits]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + (d[2] + d[5] + d[8])) % 10 == 0


def ssn_valid(digits: str) -> bool:
    """US SSN: 9 digits (separators ignored), area not 000/666/9xx, group not 00, serial not 0000."""
    d = digits.replace("-", "").replace(" ", "")
    if len(d) != 9 or not d.isascii() or not d.isdigit():
        return False
    return d[:3] not in ("000", "666") and d[0] != "9" and d[3:5] != "00" and d[5:] != "0000"


def _near(words: re.Pattern[str], text: str, start: int, window: int) -> bool:
    return words.search(text[max(0, start - window) : start]) is not None


# Each masker returns (new text, number masked).


def _mask_email(s: str) -> tuple[str, int]:
    if "@" not in s:
        return s, 0
    return _EMAIL.subn("<EMAIL>", s)


def _mask_iban(s: str) -> tuple[str, int]:
    out: list[str] = []
    last = n = 0
    for m in _IBAN_START.finditer(s):
        start = m.start()
        if start < last:
            continue
        length = _IBAN_LENGTHS.get(s[start : start + 2].upper())
        if length is None:
            continue
        i, taken = start, 0
        while i < len(s) and taken < length:
            c = s[i]
            if c.isascii() and c.isalnum():
                taken += 1
            elif not (c == " " and taken >= 4 and i + 1 < len(s) and s[i + 1].isascii() and s[i + 1].isalnum()):
                break
            i += 1
        if taken != length or (i < len(s) and s[i].isascii() and s[i].isalnum()):
            continue
        if iban_valid(s[start:i]):
            out += (s[last:start], "<IBAN>")
            last, n = i, n + 1
    if not n:
        return s, 0
    out.append(s[last:])
    return "".join(out), n


def _card_shaped(lengths: list[int]) -> bool:
    total = sum(lengths)
    if not 13 <= total <= 19:
        return False
    if len(lengths) == 1 or lengths in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(k == 4 for k in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _mask_run(run: str) -> tuple[str, int]:
    digits = _SEPARATOR_RE.sub("", run)
    if len(digits) <= 19 and luhn_valid(digits):
        return "<CARD>", 1
    if digits == run:
        return run, 0
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(run)]
    out: list[str] = []
    last = n = i = 0
    while i < len(groups):
        for j in range(min(len(groups), i + 5), i, -1):
            part = groups[i:j]
            if _card_shaped([b - a for a, b in part]):
                a, b = part[0][0], part[-1][1]
                if luhn_valid(_SEPARATOR_RE.sub("", run[a:b])):
                    out += (run[last:a], "<CARD>")
                    last, n, i = b, n + 1, j - 1
                    break
        i += 1
    out.append(run[last:])
    return "".join(out), n


def _mask_card(s: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        text, k = _mask_run(m.group())
        count += k
        return text

    return _DIGIT_RUN.sub(repl, s), count


def _mask_ssn(s: str) -> tuple[str, int]:
    s, n = _SSN.subn("<SSN>", s)
    if not _SSN_WORDS.search(s):
        return s, n
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        if not ssn_valid(m.group()) or not _near(_SSN_WORDS, s, m.start(), 30):
            return m.group()
        count += 1
        return "<SSN>"

    return _SSN_NINE.sub(repl, s), n + count


def _mask_ip(s: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        cand = m.group()
        if "." not in cand and sum(1 for g in cand.split(":") if g) < 3:
            return cand
        try:
            ipaddress.IPv6Address(cand)
        except ValueError:
            return cand
        count += 1
        return "<IP>"

    if s.count(":") >= 2:
        s = _IPV6_CANDIDATE.sub(repl, s)
    if s.count(".") >= 3 and _IPV4_HINT.search(s):
        s, n = _IPV4.subn("<IP>", s)
        count += n
    return s, count


def _mask_phone(s: str) -> tuple[str, int]:
    s, n = _PHONE.subn("<PHONE>", s)
    if "+" in s:
        count = 0

        def intl(m: re.Match[str]) -> str:
            nonlocal count
            if not 8 <= sum(c.isdigit() for c in m.group()) <= 15:
                return m.group()
            count += 1
            return "<PHONE>"

        s = _PHONE_INTL.sub(intl, s)
        n += count
    bare = 0

    def near_word(m: re.Match[str]) -> str:
        nonlocal bare
        if not _near(_PHONE_WORDS, s, m.start(), 30):
            return m.group()
        bare += 1
        return "<PHONE>"

    s = _PHONE_BARE.sub(near_word, s)
    return s, n + bare


def _mask_routing(s: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        if not aba_routing_valid(m.group()) or not _near(_ROUTING_WORDS, s, m.start(), 40):
            return m.group()
        count += 1
        return "<ROUTING>"

    return _NINE.sub(repl, s), count


def _mask_account(s: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        run = m.group()
        if _DATE_LIKE.fullmatch(run) or not _near(_ACCOUNT_WORDS, s, m.start(), 40):
            return run
        count += 1
        return "<ACCOUNT>"

    return _ACCOUNT_RUN.sub(repl, s), count


_MASKERS: dict[str, Callable[[str], tuple[str, int]]] = {
    "EMAIL": _mask_email,
    "IBAN": _mask_iban,
    "CARD": _mask_card,
    "SSN": _mask_ssn,
    "IP": _mask_ip,
    "PHONE": _mask_phone,
    "ROUTING": _mask_routing,
    "ACCOUNT": _mask_account,
}
_DIGIT_TYPES = frozenset({"IBAN", "CARD", "SSN", "PHONE", "ROUTING", "ACCOUNT"})


def _plan(types: Collection[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The chosen types in masking order, and those of them that need no digits (what most texts need checked)."""
    if isinstance(types, str):
        types = (types,)
    unknown = sorted(set(types) - set(PII_TYPES))
    if unknown:
        raise ConfigError(
            f"unknown PII type(s) {', '.join(unknown)}; expected a subset of {', '.join(PII_TYPES)}",
            hint="fix [pii] types in curate.toml",
        )
    chosen = set(types)
    ordered = tuple(t for t in _ORDER if t in chosen)
    return ordered, tuple(t for t in ordered if t not in _DIGIT_TYPES)


def _mask_one(text: str, plan: tuple[tuple[str, ...], tuple[str, ...]], counts: Counter[str]) -> str:
    if not isinstance(text, str):
        raise InputError(
            f"mask_pii expects str, found {type(text).__name__}: {text!r:.80}",
            hint="clean the texts first (clean_batch); drop missing values",
        )
    ordered, without_digits = plan
    s = text
    while True:
        if _DIGIT_CLUSTER.search(s):
            active = ordered
        else:
            active = without_digits
            if not active or ("@" not in s and s.count(":") < 2 and s.count(".") < 3):
                return s
        changed = False
        for kind in active:
            s, n = _MASKERS[kind](s)
            if n:
                counts[kind] += n
                changed = True
        if not changed:
            return s
        if "\u0338" in s:
            s = _PLACEHOLDER_SLASH.sub(r"\1", s)


def mask_pii(text: str, *, types: Collection[str] = PII_TYPES) -> tuple[str, dict[str, int]]:
    """Mask PII in one text; returns the masked text and ``{type: count}`` for the types found."""
    counts: Counter[str] = Counter()
    masked = _mask_one(text, _plan(types), counts)
    return masked, dict(counts)


def mask_batch(texts: Sequence[str], *, types: Collection[str] = PII_TYPES) -> tuple[list[str], Counter[str]]:
    """`mask_pii` over many texts; returns the masked texts and the total count per type."""
    masked, found = mask_each(texts, types=types)
    counts: Counter[str] = Counter()
    for c in found:
        if c:
            counts.update(c)
    return masked, counts


def mask_each(
    texts: Sequence[str], *, types: Collection[str] = PII_TYPES
) -> tuple[list[str], list[dict[str, int] | None]]:
    """`mask_pii` over many texts; returns the masked texts and each text's counts (None where nothing was masked).

    Why per text: an ingest remembers what a raw text gave (see pipelines/prepare.py) and counts it again, without
    masking it again, each time the text is repeated.
    """
    plan = _plan(types)
    counts: Counter[str] = Counter()
    masked: list[str] = []
    found: list[dict[str, int] | None] = []
    for t in texts:
        masked.append(_mask_one(t, plan, counts))
        if counts:
            found.append(dict(counts))
            counts.clear()
        else:
            found.append(None)
    return masked, found
