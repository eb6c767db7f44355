"""The built-in sample files are messy on purpose; these tests pin down exactly how.

Every count in the tables of `pipelines/sample_data/README.md` is recomputed here with the
standard library, so the README, the files and the ingest tests that rely on them cannot drift.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import ftfy
import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "pipelines" / "sample_data"
CS_PATH = SAMPLE_DIR / "customer_service.csv"
FIN_PATH = SAMPLE_DIR / "financial.jsonl"
README = SAMPLE_DIR / "README.md"

CS_COLUMNS = ["ticket_id", "channel", "customer", "created_at", "text", "intent"]
FIN_KEYS = {"id", "source", "published", "headline", "sentiment", "company"}
INTENTS = {
    "card_arrival",
    "lost_or_stolen_card",
    "refund_request",
    "flight_delay",
    "baggage_issue",
    "change_pin",
    "transfer_failed",
    "account_locked",
    "fee_dispute",
    "cancel_booking",
    "exchange_rate",
    "complaint_other",
}
CHANNELS = {"email", "chat", "twitter", "web_form", "phone"}
SENTIMENTS = {"positive", "negative", "neutral"}
FIN_SOURCES = {"newswire", "twitter", "press_release", "blog"}

# Every PII example the README lists, by kind; each must occur verbatim in customer_service.csv.
PII_EXAMPLES: dict[str, list[str]] = {
    "email": [
        "jane.doe@example.com",
        "m.okafor+refunds@mail.example.org",
        "PAUL_W@EXAMPLE.NET",
        "sam.rivera@example.com",
        "sam.r@oldmail.example",
        "no-reply@acmebank.example",
    ],
    "phone": [
        "+44 20 7946 0958",
        "(555) 013-2467",
        "555.013.9876",
        "+1-202-555-0143",
        "07700 900123",
        "+49 30 123456789",
        "0800 123 4567",
    ],
    "card (Luhn-valid)": [
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "4012888888881881",
        "3782 822463 10005",
        "6011 0009 9013 9424",
    ],
    "16-digit number, not Luhn-valid": ["4000123456789010", "1234 5678 9012 3456"],
    "IBAN": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
    "SSN-like": ["123-45-6789"],
    "routing number": ["routing 021000021"],
    "account number": ["account # 000123456789"],
    "IP address": ["203.0.113.7", "192.168.1.24"],
}

URL = re.compile(r"https?://\S+|www\.\S+")
HANDLE = re.compile(r"(?<![\w.+-])@[A-Za-z_]\w*")
ENTITY = re.compile(r"&(?:[a-z]+|#\d+|#x[0-9a-f]+);", re.I)
BR = re.compile(r"<br\s*/?>", re.I)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
SIGNATURE = re.compile(r"(?:\^[A-Z]{2}|-Anna)\s*$")
CASHTAG = re.compile(r"\$[A-Z]{2,5}\b")
PERCENT = re.compile(r"\d\s?%")
ABBREV_MID = re.compile(r"\b(?:Inc|Corp|Co|Ltd|plc)\. \S")
MOJIBAKE = re.compile("[âÃÂ][\u0080-\u00bf\u2018-\u203a\u0152-\u0178\u02c6\u02dc\u20ac\u2122]")
CARD_CANDIDATE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")


def is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return 0x1F300 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def one_word_apart(a: str, b: str) -> bool:
    """True when b is a with exactly one whitespace token substituted, dropped or inserted."""
    x, y = a.split(), b.split()
    if x == y:
        return False
    if len(x) == len(y):
        return sum(p != q for p, q in zip(x, y, strict=True)) == 1
    if abs(len(x) - len(y)) != 1:
        return False
    short, long_ = (x, y) if len(x) < len(y) else (y, x)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def near_duplicate_pairs(texts: list[str]) -> int:
    """Pairs of distinct texts of at least four words that are one word apart."""
    uniq = sorted({t for t in texts if len(t.split()) >= 4})
    return sum(one_word_apart(a, b) for i, a in enumerate(uniq) for b in uniq[i + 1 :])


def duplicate_stats(pairs: Sequence[tuple[str, object]]) -> tuple[int, int]:
    """(extra copies of an already seen text, texts whose copies carry different labels)."""
    counts = Counter(t for t, _ in pairs)
    labels: dict[str, set[object]] = {}
    for t, lab in pairs:
        labels.setdefault(t, set()).add(lab)
    extra = sum(n - 1 for n in counts.values())
    conflicting = sum(1 for t, labs in labels.items() if counts[t] > 1 and len(labs) > 1)
    return extra, conflicting


def readme_table(section: str) -> dict[str, int]:
    """The `| kind | count |` table under the README heading that names `section`."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("#") and section in ln)
    table: dict[str, int] = {}
    for ln in lines[start + 1 :]:
        if ln.startswith("#"):
            break
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if ln.startswith("|") and len(cells) >= 2 and cells[1].isdigit():
            table[cells[0].replace("`", "")] = int(cells[1])
    return table


# ---------------------------------------------------------------- customer_service.csv


def cs_records() -> list[list[str]]:
    with CS_PATH.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def cs_rows() -> list[dict[str, str]]:
    records = cs_records()
    return [dict(zip(records[0], r, strict=True)) for r in records[1:] if len(r) == len(CS_COLUMNS)]


def cs_counts() -> dict[str, int]:
    records = cs_records()
    rows = cs_rows()
    texts = [r["text"] for r in rows]
    labelled = [(r["text"], r["intent"]) for r in rows if r["text"].strip()]
    extra, conflicting = duplicate_stats(labelled)
    customers = Counter(r["customer"] for r in rows)

    def n(pred: Callable[[str], object]) -> int:
        return sum(1 for t in texts if pred(t))

    def pii(kind: str) -> int:
        return n(lambda t: any(ex in t for ex in PII_EXAMPLES[kind]))

    return {
        "records (excluding header)": len(records) - 1,
        "well-formed rows (6 fields)": len(rows),
        "malformed rows (7 fields, unquoted comma)": sum(1 for r in records[1:] if len(r) != len(CS_COLUMNS)),
        "empty text": n(lambda t: t == ""),
        "whitespace-only text": n(lambda t: t != "" and not t.strip()),
        "over-long text (> 20,000 chars)": n(lambda t: len(t) > 20_000),
        "unlabeled (empty intent)": sum(1 for r in rows if r["intent"] == ""),
        "distinct customers": len(customers),
        "customers with several rows": sum(1 for c in customers.values() if c > 1),
        "exact duplicate texts (extra copies)": extra,
        "duplicated texts with conflicting intents": conflicting,
        "near-duplicate pairs (one word changed)": near_duplicate_pairs([t for t in texts if t.strip()]),
        "URL": n(URL.search),
        "@handle": n(HANDLE.search),
        "emoji": n(lambda t: any(is_emoji(c) for c in t)),
        "HTML entity": n(ENTITY.search),
        "<br> tag": n(BR.search),
        "zero-width space": n(lambda t: "\u200b" in t),
        "no-break space": n(lambda t: "\u00a0" in t),
        "multi-line text": n(lambda t: "\n" in t),
        "CRLF inside text": n(lambda t: "\r\n" in t),
        "agent signature (^XX or -Anna)": n(SIGNATURE.search),
        "email address": n(EMAIL.search),
        "phone number": pii("phone"),
        "card number (Luhn-valid)": n(
            lambda t: any(luhn_ok(m) and len(re.sub(r"\D", "", m)) >= 15 for m in CARD_CANDIDATE.findall(t))
        ),
        "16-digit number, not Luhn-valid": pii("16-digit number, not Luhn-valid"),
        "IBAN": pii("IBAN"),
        "SSN-like": pii("SSN-like"),
        "routing number": pii("routing number"),
        "account number": pii("account number"),
        "IP address": n(re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b").search),
        "created_at ISO 8601 with Z": sum(1 for r in rows if r["created_at"].endswith("Z")),
        "created_at DD/MM/YYYY HH:MM": sum(1 for r in rows if "/" in r["created_at"]),
        "created_at with +01:00 offset": sum(1 for r in rows if r["created_at"].endswith("+01:00")),
    }


def test_customer_service_header_and_shape() -> None:
    records = cs_records()
    assert records[0] == CS_COLUMNS
    assert len(records) - 1 == 200
    bad = [r for r in records[1:] if len(r) != len(CS_COLUMNS)]
    assert len(bad) == 1 and len(bad[0]) == 7


def test_customer_service_labels_and_channels_are_documented() -> None:
    rows = cs_rows()
    assert {r["intent"] for r in rows} - {""} == INTENTS
    assert {r["channel"] for r in rows} <= CHANNELS
    assert len({r["ticket_id"] for r in rows}) == len(rows)


def test_customer_service_counts_match_readme() -> None:
    assert cs_counts() == readme_table("customer_service.csv")


@pytest.mark.parametrize("kind", sorted(PII_EXAMPLES))
def test_every_listed_pii_example_is_present(kind: str) -> None:
    raw = CS_PATH.read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    for example in PII_EXAMPLES[kind]:
        assert example in raw, f"{kind} example {example!r} missing from customer_service.csv"
        assert example in readme, f"{kind} example {example!r} not listed in README.md"


def test_card_examples_have_the_documented_luhn_status() -> None:
    assert all(luhn_ok(c) for c in PII_EXAMPLES["card (Luhn-valid)"])
    assert not any(luhn_ok(c) for c in PII_EXAMPLES["16-digit number, not Luhn-valid"])


# ---------------------------------------------------------------- financial.jsonl


def fin_lines() -> list[str]:
    return FIN_PATH.read_text(encoding="utf-8").split("\n")[:-1]


def fin_parsed() -> list[object]:
    """One entry per non-blank line: the decoded JSON value, or None where the line is not JSON."""
    out: list[object] = []
    for line in fin_lines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append(None)
    return out


def fin_records() -> list[dict[str, object]]:
    return [
        v for v in fin_parsed() if isinstance(v, dict) and isinstance(v.get("headline"), str) and v["headline"].strip()
    ]


def fin_counts() -> dict[str, int]:
    lines = fin_lines()
    parsed = fin_parsed()
    recs = fin_records()
    heads = [str(r["headline"]) for r in recs]
    extra, conflicting = duplicate_stats([(str(r["headline"]), r["sentiment"]) for r in recs])
    objects = [v for v in parsed if isinstance(v, dict)]

    def n(pred: Callable[[str], object]) -> int:
        return sum(1 for h in heads if pred(h))

    return {
        "lines": len(lines),
        "blank lines": sum(1 for ln in lines if not ln.strip()),
        "records (non-blank lines)": len(parsed),
        "valid records": len(recs),
        "invalid JSON": sum(1 for v in parsed if v is None),
        "JSON array instead of object": sum(1 for v in parsed if isinstance(v, list)),
        "missing headline key": sum(1 for v in objects if "headline" not in v),
        "empty headline": sum(1 for v in objects if v.get("headline") == ""),
        "whitespace-only headline": sum(
            1 for v in objects if isinstance(v.get("headline"), str) and v["headline"] and not v["headline"].strip()
        ),
        "unlabeled (sentiment null)": sum(1 for r in recs if r["sentiment"] is None),
        "no company (company null)": sum(1 for r in recs if r["company"] is None),
        "exact duplicate headlines (extra copies)": extra,
        "duplicated headlines with conflicting sentiment": conflicting,
        "near-duplicate pairs (one word changed)": near_duplicate_pairs(heads),
        "mojibake": n(MOJIBAKE.search),
        "HTML entity": n(ENTITY.search),
        "URL": n(URL.search),
        "cashtag ($TICKER)": n(CASHTAG.search),
        "emoji": n(lambda h: any(is_emoji(c) for c in h)),
        "percentage": n(PERCENT.search),
        "€ amount": n(lambda h: "€" in h or "EUR" in h),
        "£ amount": n(lambda h: "£" in h),
        "abbreviation (Inc./Corp./Co./Ltd./plc) mid-headline": n(ABBREV_MID.search),
        "repeated inner whitespace": n(lambda h: "  " in h),
        "lines with \\u escapes": sum(1 for ln in lines if "\\u" in ln),
        "published ISO 8601 with Z": sum(1 for r in recs if str(r["published"]).endswith("Z")),
        "published date only": sum(1 for r in recs if len(str(r["published"])) == 10),
        "published RFC 2822": sum(1 for r in recs if str(r["published"]).endswith("GMT")),
    }


def test_financial_shape() -> None:
    parsed = fin_parsed()
    assert len(parsed) == 200
    assert sum(1 for v in parsed if v is None) == 2
    for rec in fin_records():
        assert set(rec) == FIN_KEYS


def test_financial_labels_are_documented() -> None:
    recs = fin_records()
    assert {r["sentiment"] for r in recs} == SENTIMENTS | {None}
    assert {r["source"] for r in recs} <= FIN_SOURCES
    assert len({r["id"] for r in recs}) == len(recs)


def test_financial_counts_match_readme() -> None:
    assert fin_counts() == readme_table("financial.jsonl")


def test_financial_mojibake_is_repairable_by_ftfy() -> None:
    damaged = [str(r["headline"]) for r in fin_records() if MOJIBAKE.search(str(r["headline"]))]
    assert damaged
    for head in damaged:
        fixed = ftfy.fix_text(head)
        assert not MOJIBAKE.search(fixed), head
        assert "don't" in fixed or any(ch in fixed for ch in "€£èø–—'")
