"""PII masking: validators, each type with positive and negative cases, false-positive guards, properties."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import ConfigError, InputError
from pipelines.clean import clean_batch, clean_text
from pipelines.pii import (
    PII_TYPES,
    aba_routing_valid,
    iban_valid,
    luhn_valid,
    mask_batch,
    mask_pii,
    ssn_valid,
)
from tests.conftest import shared_data

# The usual email pattern: nothing it matches may survive masking.
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A card as written: digits joined by single spaces or dashes (ASCII or Unicode), taken as a maximal run.
SEPARATORS = "[ \\-\u2010-\u2014\u2212]"
DIGIT_RUN_RE = re.compile(rf"\d(?:{SEPARATORS}?\d)*")


def luhn_cards(text: str) -> list[str]:
    """Maximal digit runs of 13-19 digits that pass Luhn, i.e. what must never survive masking."""
    out = []
    for run in DIGIT_RUN_RE.findall(text):
        digits = re.sub(SEPARATORS, "", run)
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            out.append(run)
    return out


def mask(text: str) -> str:
    return mask_pii(text)[0]


# --- validators -----------------------------------------------------------------------------------------------


def test_luhn() -> None:
    for good in ("4111111111111111", "378282246310005", "5555555555554444", "6011111111111117", "79927398713"):
        assert luhn_valid(good)
    for bad in ("4111111111111112", "79927398710", "", "7", "4111 1111 1111 1111", "abcd", "\u00b2\u00b2"):
        assert not luhn_valid(bad)
    assert luhn_valid("\u0664\u0661\u0661\u0661" + "1" * 12)  # Arabic-Indic digits are digits too


def test_iban() -> None:
    for good in (
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "gb82west12345698765432",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "CH9300762011623852957",
        "NO9386011117947",
    ):
        assert iban_valid(good), good
    for bad in (
        "DE89370400440532013001",  # checksum
        "DE8937040044053201300",  # length for DE
        "XX89370400440532013000",  # not a registry country
        "DE00370400440532013000",  # check digits 00
        "",
        "DE89-3704-0044-0532-0130-00",
    ):
        assert not iban_valid(bad), bad


def test_aba_routing() -> None:
    for good in ("021000021", "011000015", "121000358", "026009593"):
        assert aba_routing_valid(good), good
    for bad in ("123456789", "021000022", "02100002", "0210000211", "991000028", "abcdefghi"):
        assert not aba_routing_valid(bad), bad


def test_ssn_valid() -> None:
    assert ssn_valid("123-45-6789") and ssn_valid("123456789") and ssn_valid("123 45 6789")
    for bad in ("000-12-3456", "666-12-3456", "923-45-6789", "123-00-6789", "123-45-0000", "12-345-678"):
        assert not ssn_valid(bad), bad


# --- each type ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected", "counts"),
    [
        # EMAIL
        ("mail john.doe+x@gmail.com or JANE@Example.co.uk.", "mail <EMAIL> or <EMAIL>.", {"EMAIL": 2}),
        ("o'brien@mail.ie, a!b#c@x.io", "<EMAIL>, <EMAIL>", {"EMAIL": 2}),
        # CARD
        ("card 4111 1111 1111 1111 exp 12/25", "card <CARD> exp 12/25", {"CARD": 1}),
        ("4111-1111-1111-1111", "<CARD>", {"CARD": 1}),
        ("paid with 5555555555554444.", "paid with <CARD>.", {"CARD": 1}),
        ("Amex 3782 822463 10005 ok", "Amex <CARD> ok", {"CARD": 1}),
        ("cards 4111 1111 1111 1111 2023", "cards <CARD> 2023", {"CARD": 1}),
        ("x6011111111111117y", "x<CARD>y", {"CARD": 1}),
        # IBAN
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN <IBAN> please", {"IBAN": 1}),
        ("to GB82WEST12345698765432.", "to <IBAN>.", {"IBAN": 1}),
        ("gb82 west 1234 5698 7654 32 EUR", "<IBAN> EUR", {"IBAN": 1}),
        ("FR1420041010050500013M02606 and NL91ABNA0417164300", "<IBAN> and <IBAN>", {"IBAN": 2}),
        # SSN
        ("SSN 123-45-6789.", "SSN <SSN>.", {"SSN": 1}),
        ("my social security number is 123 45 6789", "my social security number is <SSN>", {"SSN": 1}),
        ("ssn: 123456789", "ssn: <SSN>", {"SSN": 1}),
        # PHONE
        ("Call 914-329-0185.", "Call <PHONE>.", {"PHONE": 1}),
        ("my phone number is (631)891-5722", "my phone number is <PHONE>", {"PHONE": 1}),
        ("(555) 123-4567 or 555.123.4567", "<PHONE> or <PHONE>", {"PHONE": 2}),
        ("+1 555 123 4567 / 1-800-335-2247", "<PHONE> / <PHONE>", {"PHONE": 2}),
        ("+15551234567", "<PHONE>", {"PHONE": 1}),
        ("PLEASE HELP 917 703 1472", "PLEASE HELP <PHONE>", {"PHONE": 1}),
        ("London +44 20 7946 0958, Paris +33 1 23 45 67 89", "London <PHONE>, Paris <PHONE>", {"PHONE": 2}),
        ("tel. +44 (0)20 7946 0958", "tel. <PHONE>", {"PHONE": 1}),
        ("call me at 5551234567", "call me at <PHONE>", {"PHONE": 1}),
        ("VM full 610-362-7498(99)", "VM full <PHONE>(99)", {"PHONE": 1}),
        # ROUTING
        ("routing number 021000021", "routing number <ROUTING>", {"ROUTING": 1}),
        ("ABA: 011000015, RTN 121000358", "ABA: <ROUTING>, RTN <ROUTING>", {"ROUTING": 2}),
        # ACCOUNT
        ("account #12345678", "account #<ACCOUNT>", {"ACCOUNT": 1}),
        ("acct no. 0012-3456-789", "acct no. <ACCOUNT>", {"ACCOUNT": 1}),
        ("A/C 123456 closed", "A/C <ACCOUNT> closed", {"ACCOUNT": 1}),
        ("account 4111111111111112", "account <ACCOUNT>", {"ACCOUNT": 1}),  # not Luhn: not a card
        (
            "routing 021000021 and checking account 987654321",
            "routing <ROUTING> and checking account <ACCOUNT>",
            {"ROUTING": 1, "ACCOUNT": 1},
        ),
        # IP
        ("from 153.69.214.203.", "from <IP>.", {"IP": 1}),
        ("hosts 10.0.0.1, 2001:db8:85a3::8a2e:370:7334", "hosts <IP>, <IP>", {"IP": 2}),
        ("fe80::1ff:fe23:4567:890a", "<IP>", {"IP": 1}),
        ("::ffff:192.0.2.1 ok", "<IP> ok", {"IP": 1}),
    ],
)
def test_masks(raw: str, expected: str, counts: dict[str, int]) -> None:
    assert mask_pii(raw) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        # amounts, dates, times, years, percentages
        "Revenue 1,234,567 up 5.2% on 2023-04-27 at 12:30:45 in 2023",
        "EUR 1.234.567,89 and $1,234,567.89 and \u20ac1.5bn",
        "dates 27-04-2023, 04/27/2023, 2023.04.27, 20230427",
        "flight 1881 on 2.19-2.21, gate 23, seat 7A, 25 min hold",
        "+0.5 0.25 0.75 1.25 +1.5 2.3 4.5 6.7",
        "price target 182.50, ratio 10::1, version 1.2.3, 256.1.1.1",
        # tickers and handles
        "$AAPL $MSFT $BRK.B up; <USER> said",
        # order / ticket / reference numbers without account words
        "order number 12345678 and ref 021000021",
        "Incident: 150202-000419 #150219-000114 case#8719519",
        "confirmation KMM24999563V99860L0KM",
        "4111111111111112 is not a card",
        # invalid SSN areas, already-masked account forms
        "000-12-3456 666-12-3456 923-45-6789",
        "acct ending XXXX1234 or ****5678 or \u2022\u2022\u2022\u2022 9012",
        "account balance $1234567 and 1234567.89 and 12%",
        "account opened 2019-05-02",
        "my ssn is 666456789 no wait 987-65-4321",
        # IBAN-like that fails the checksum and is no card either
        "DE89 3704 0044 0532 0130 02",
        # handles are not emails
        "@united @delta thanks",
    ],
)
def test_false_positive_guards(text: str) -> None:
    assert mask_pii(text) == (text, {})


def test_only_selected_types() -> None:
    text = "mail a@b.com, card 4111111111111111, call 914-329-0185"
    assert mask_pii(text, types=("EMAIL",)) == (
        "mail <EMAIL>, card 4111111111111111, call 914-329-0185",
        {"EMAIL": 1},
    )
    assert mask_pii(text, types=["CARD", "PHONE"])[1] == {"CARD": 1, "PHONE": 1}
    assert mask_pii(text, types="EMAIL")[1] == {"EMAIL": 1}
    assert mask_pii(text, types=())[0] == text


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="PASSPORT"):
        mask_pii("x", types=("EMAIL", "PASSPORT"))
    with pytest.raises(InputError, match="NoneType"):
        mask_batch(["ok", None])  # type: ignore[list-item]


def test_batch_counts() -> None:
    texts = ["a@b.com and c@d.org", "no pii here", "4111 1111 1111 1111", "call 914-329-0185 or a@b.com"]
    masked, counts = mask_batch(texts)
    assert masked == ["<EMAIL> and <EMAIL>", "no pii here", "<CARD>", "call <PHONE> or <EMAIL>"]
    assert counts == Counter({"EMAIL": 3, "CARD": 1, "PHONE": 1})
    assert set(PII_TYPES) == {"EMAIL", "CARD", "IBAN", "SSN", "PHONE", "ROUTING", "ACCOUNT", "IP"}


def test_glued_pii_is_masked_to_the_end() -> None:
    # The card hides the IBAN's start from its pattern until the card is masked: masking repeats.
    masked, counts = mask_pii("4111111111111111GB82WEST12345698765432")
    assert masked == "<CARD><IBAN>"
    assert counts == {"CARD": 1, "IBAN": 1}


def test_clean_then_mask_pipeline() -> None:
    raw = "@united my email is Jane.Doe@Example.com &amp; card 4111&#8209;1111 1111 1111, call (555) 123-4567 ^JH"
    cleaned = clean_text(raw, domain="customer_service")
    masked, counts = mask_pii(cleaned)
    assert masked == "my email is <EMAIL> & card <CARD>, call <PHONE>"
    assert counts == {"EMAIL": 1, "CARD": 1, "PHONE": 1}
    assert mask("4111\u20131111\u22121111 1111") == "<CARD>"


# --- properties -----------------------------------------------------------------------------------------------


def _complete_luhn(body: str) -> str:
    return next(body + str(d) for d in range(10) if luhn_valid(body + str(d)))


CARDS = st.text("0123456789", min_size=12, max_size=18).map(_complete_luhn)
SEPARATED_CARDS = st.builds(
    lambda card, seps: "".join(c + s for c, s in zip(card, seps + [""] * len(card), strict=False)),
    CARDS,
    st.lists(st.sampled_from(["", "", "", " ", "-", "\u2010", "\u2013"]), max_size=19),
)
NOISE = st.one_of(
    st.text(max_size=6),
    st.sampled_from([" ", "-", "7", "12", ".", "@", "x", "account ", "routing ", "DE89 3704 0044 0532 0130 00"]),
)
MIXED = st.lists(st.one_of(NOISE, SEPARATED_CARDS, st.emails()), max_size=8).map("".join)
TEXTS = st.one_of(st.text(), MIXED)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(TEXTS)
def test_masked_output_has_no_card_and_no_email(text: str) -> None:
    masked, counts = mask_pii(text)
    assert luhn_cards(masked) == []
    assert EMAIL_RE.search(masked) is None
    assert all(n > 0 for n in counts.values())


@PROPERTY
@given(TEXTS)
def test_masking_is_idempotent(text: str) -> None:
    masked, _ = mask_pii(text)
    assert mask_pii(masked) == (masked, {})


@PROPERTY
@given(
    st.text(st.characters(exclude_characters="0123456789@"), max_size=20),
    SEPARATED_CARDS,
    st.emails(),
    st.text(st.characters(exclude_characters="0123456789@"), max_size=20),
)
def test_embedded_card_and_email_are_masked(before: str, card: str, email: str, after: str) -> None:
    masked, counts = mask_pii(f"{before} ; {card} ; {email} {after}")
    assert card not in masked and email not in masked
    assert counts.get("CARD", 0) + counts.get("ACCOUNT", 0) + counts.get("PHONE", 0) >= 1
    assert counts.get("EMAIL", 0) >= 1


@PROPERTY
@given(TEXTS)
def test_masking_cleaned_text_keeps_it_clean(text: str) -> None:
    for domain in ("customer_service", "financial"):
        cleaned = clean_text(text, domain=domain)
        masked, _ = mask_pii(cleaned)
        assert clean_text(masked, domain=domain) == masked
        assert luhn_cards(masked) == [] and EMAIL_RE.search(masked) is None


# --- real data ------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_airline_tweets_masking() -> None:
    import pandas as pd

    tweets = pd.read_csv(shared_data("twitter_us_airline_sentiment", "Tweets.csv"))["text"].tolist()
    masked, counts = mask_batch(clean_batch(tweets, domain="customer_service"))
    assert not any(EMAIL_RE.search(t) or luhn_cards(t) for t in masked)
    # Customers post their phone numbers and emails for call-backs; the data set has a few dozen of each.
    assert counts["PHONE"] >= 20 and counts["EMAIL"] >= 10
    assert "Call <PHONE>." in masked[tweets.index(next(t for t in tweets if "914-329-0185" in t))]
    assert mask_batch(masked)[1] == Counter()


@pytest.mark.integration
def test_no_false_positives_on_banking_and_financial_text() -> None:
    import pandas as pd

    banking = pd.read_csv(shared_data("banking77", "train.csv"))["text"].tolist()
    _, counts = mask_batch(clean_batch(banking, domain="customer_service"))
    assert counts == Counter()
    news = pd.read_csv(shared_data("twitter_financial_news_sentiment", "sent_train.csv"))["text"].tolist()
    _, counts = mask_batch(clean_batch(news, domain="financial"))
    assert counts == Counter()
    lines = shared_data("financial_phrasebank", "Sentences_AllAgree.txt").read_text(encoding="latin-1").splitlines()
    _, counts = mask_batch(clean_batch([ln.rsplit("@", 1)[0] for ln in lines], domain="financial"))
    assert set(counts) <= {"PHONE"}  # press-release contact lines ("tel. +358 ...") are real phone numbers
