"""Per-domain text cleaning and the exact-duplicate key.

One cleaning pass, in this order (chosen so that a later step rarely creates work for an earlier one):

1. Invisible characters removed: C0/C1 controls other than whitespace, zero-width U+200B-U+200F (ZWSP, ZWNJ,
   ZWJ, LRM, RLM), bidi embeddings U+202A-U+202E, U+2060-U+206F (word joiner, isolates), BOM U+FEFF, soft hyphen
   U+00AD and lone surrogates (never valid text, and they make later UTF-8 encoding raise). First, so that
   ``&am\\u200bp;`` or ``<\\x00p>`` cannot turn into an entity or a tag after a later step.
2. HTML entities decoded with `html.unescape`, repeated until stable (``&amp;amp;lt;`` -> ``<``); what decoding
   produced (``&#x200B;``) goes through step 1 again.
3. HTML tags and comments replaced by a space (a space, not nothing, so that removal cannot join the pieces of a
   new tag or entity). Only names of real HTML elements count as tags (``<br>``, ``<p class=x>``, ``</div>``);
   ``<3``, ``a < b``, ``<NAME>`` and our own placeholders (``<EMAIL>``, ``<URL>``) stay. ``<script>``/``<style>``
   blocks go with their content.
4. Unicode NFKC (full-width forms, ligatures, compatibility spaces, ``…`` -> ``...``), skipped for ASCII text.
5. Whitespace collapsed to single spaces and stripped.
6. Domain rules (below).

Text that is not pure ASCII after step 2 is passed again until it stops changing (NFKC can turn ``＆``, ``＜``
and ``＠`` into ``&``, ``<`` and ``@``, which the earlier steps must then see); pure-ASCII text needs one pass.
This makes ``clean_text`` idempotent for every string, which the hypothesis tests check.

Placeholders (`PLACEHOLDERS`) are never altered, and cleaning masked text changes nothing, so
``clean(mask(clean(x))) == mask(clean(x))``: URL and handle rules do not fire right after a placeholder
(masking turns ``4111111111111111@x`` into ``<CARD>@x``, which must stay), and a U+0338 that NFKC would fuse
with a placeholder's ``>`` into ``≯`` is dropped.

Domain rules:

* ``customer_service``: URLs -> ``<URL>``; a *leading* run of @handles (the addressees of a tweet, e.g.
  ``@united @AmericanAir: thanks``) is dropped, because it names the company being addressed and carries no
  content (a text that is nothing but handles keeps them as ``<USER>``); other @handles -> ``<USER>``; agent
  signatures at the very end are removed, conservatively: ``^JH`` / ``*CK`` (caret or asterisk plus exactly two
  capitals) and ``-Anna`` / ``~Tom`` (dash or tilde plus one capitalised name, only right after ``.``, ``!``,
  ``?`` or ``)``). Emoji and emoticons are kept: they carry sentiment.
* ``financial``: URLs -> ``<URL>``, @handles -> ``<USER>``; numbers, currency signs, percentages and cashtags
  (``$AAPL``) are never touched; U+2212 MINUS SIGN becomes ``-`` so that ``−5.2%`` and ``-5.2%`` agree.

`normalize_for_dedup` builds the exact-duplicate key: casefold, tokens are words, numbers (``1,234.56``,
``5.2%``, ``-3``, ``$5``, ``2023-04-27``), cashtags (``$aapl``) and placeholders (``<email>``); every other ASCII
character is a separator, apostrophes inside words vanish (``don't`` == ``dont``), non-ASCII symbols (emoji,
``€``) are kept as tokens and other non-ASCII punctuation is dropped.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Sequence

from curation.errors import ConfigError, InputError

__all__ = [
    "DOMAINS",
    "PLACEHOLDERS",
    "clean_text",
    "clean_batch",
    "is_single_spaced",
    "normalize_for_dedup",
    "normalize_batch",
]

DOMAINS = ("customer_service", "financial")

PLACEHOLDERS = ("URL", "USER", "EMAIL", "CARD", "IBAN", "SSN", "PHONE", "ROUTING", "ACCOUNT", "IP")
"""Typed placeholders written by cleaning (URL, USER) and PII masking (the rest); cleaning never alters them."""

_MAX_PASSES = 10

_JUNK = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)

_AMP_CHAIN = re.compile(r"&(?:amp;|#0*38;|#[xX]0*26;)+")

_HTML_ELEMENTS = (
    "a abbr acronym address applet area article aside audio b base basefont bdi bdo big blink blockquote body br "
    "button canvas caption center cite code col colgroup data datalist dd del details dfn dialog dir div dl dt em "
    "embed fieldset figcaption figure font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html "
    "i iframe img input ins kbd label legend li link main map mark marquee math menu meta meter nav nobr noframes "
    "noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp script section "
    "select small source span strike strong style sub summary sup svg table tbody td template textarea tfoot th "
    "thead time title tr track tt u ul var video wbr"
).split()
_TAG = re.compile(
    r"<(script|style)\b[^>]*>.*?</\1\s*>"
    r"|<!--.*?-->"
    r"|<!doctype\b[^<>]*>"
    r"|</?(?:" + "|".join(sorted(_HTML_ELEMENTS, key=len, reverse=True)) + r")(?=[\s/>])[^<>]*>",
    re.IGNORECASE | re.DOTALL,
)
# NFC composes "<", "=" and ">" with U+0338 into ≮ ≠ ≯; a stray U+0338 after a placeholder would eat its ">".
_PLACEHOLDER_SLASH = re.compile(r"(<(?:" + "|".join(PLACEHOLDERS) + r")>)\u0338+")

# Patterns start with a literal or a small set so that `re` can skip ahead quickly; the lookbehinds that follow
# say what may not come before: a word character ("xhttp://", "john@x.com") or a placeholder, because masking
# turns "4111111111111111@x" into "<CARD>@x", and cleaning the masked text must not change it.
_AFTER_PLACEHOLDER = "".join(f"(?<!<{p}>{{0}})" for p in PLACEHOLDERS)
_URL = re.compile(
    r"[hHwW](?<!\w[hHwW])"
    + _AFTER_PLACEHOLDER.format("[hHwW]")
    + r"(?:(?<=[hH])(?i:ttps?://)|(?<=[wW])(?i:ww\.))[^\s<>\"]*[^\s<>\"'.,;:!?)\]}]"
)
# Not after a word character or the characters of an email's local part: "a.b-c@x.com" is an email, not a handle.
_HANDLE = re.compile(r"@(?<![\w+%-]@)" + _AFTER_PLACEHOLDER.format("@") + r"\w+(?:@\w+)*")
_LEADING_HANDLES = re.compile(r"(?:@\w+(?:@\w+)*[:,]? )+")
_SIG_INITIALS = re.compile(r"(?:^|(?<=[\s.!?,;:)]))[\^*][A-Z]{2}$")
_SIG_NAME = re.compile(r"(?<=[.!?)]) [-~\u2013\u2014] ?[A-Z][a-z]{1,14}$")

# The apostrophe first and the word character before it checked by a lookbehind: `re` then scans for the apostrophe
# quickly instead of trying the lookbehind at every position.
_APOSTROPHE = re.compile(r"['\u2019\u02bc](?<=\w.)['\u2019\u02bc]*(?=\w)")
_PLACEHOLDER_KEYS = "|".join(p.lower() for p in PLACEHOLDERS)
_DEDUP_ASCII = re.compile(
    r"<(?:" + _PLACEHOLDER_KEYS + r")>"
    r"|\$[^\W\d_]{1,10}(?:\.[^\W\d_]{1,2})?(?![\w])"
    r"|(?:(?<!\w)[-+])?[$€£¥]?\d+(?:[.,:/-]\d+)*%?"
    r"|[^\W_]+"
)
_DEDUP_ANY = re.compile(_DEDUP_ASCII.pattern + r"|[^\w\s]")
# _DEDUP_ASCII for casefolded ASCII text, written to find the same tokens faster: the pattern starts with the set of
# characters a token can start with, so `re` skips separators in C instead of trying every alternative at each of
# them; a lookbehind on that first character then picks the alternative (a letter starts a word, "<" a placeholder,
# "$" a cashtag or an amount, a sign or a digit a number), in _DEDUP_ASCII's order where two could match.
_NUMBER_TAIL = r"\d*(?:[.,:/-]\d+)*%?"
_DEDUP_ASCII_FAST = re.compile(
    r"[a-z<$+\-0-9](?:"
    r"(?<=[a-z])[a-z0-9]*"
    r"|(?<=<)(?:" + _PLACEHOLDER_KEYS + r")>"
    r"|(?<=\$)[a-z]{1,10}(?:\.[a-z]{1,2})?(?![a-z0-9_])"
    r"|(?<=\$)\d" + _NUMBER_TAIL
    + r"|(?<=[-+])(?<![a-z0-9_][-+])\$?\d" + _NUMBER_TAIL
    + r"|(?<=\d)" + _NUMBER_TAIL
    + r")"
)


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ConfigError(
            f"unknown cleaning domain {domain!r}; expected one of {', '.join(DOMAINS)}",
            hint="set `domain` in curate.toml (or --domain) to customer_service or financial",
        )


def _unescape(s: str) -> str:
    # Collapse ``&amp;amp;amp;`` chains first: one decode per level would be quadratic in a deep chain.
    s = _AMP_CHAIN.sub("&", s)
    while True:
        t = html.unescape(s)
        if t == s:
            return s
        s = _JUNK.sub("", t)


def _strip_tags(s: str) -> str:
    while True:
        t = _TAG.sub(" ", s)
        if t == s:
            return s
        s = t


def _replace_urls(s: str) -> str:
    if "://" in s or "ww" in s or "WW" in s or "Ww" in s or "wW" in s:
        return _URL.sub("<URL>", s)
    return s


def _strip_signatures(s: str) -> str:
    while len(s) >= 3:
        m = _SIG_INITIALS.search(s, len(s) - 3) if s[-3] in "^*" else None
        if m is None and s[-1].isalpha():
            tail = s[-20:]
            if "-" in tail or "~" in tail or "\u2013" in tail or "\u2014" in tail:
                m = _SIG_NAME.search(s, max(0, len(s) - 20))
        if m is None:
            return s
        s = s[: m.start()].rstrip()
    return s


def _customer_service(s: str) -> str:
    s = _replace_urls(s)
    if "@" in s:
        if s.startswith("@"):
            m = _LEADING_HANDLES.match(s)
            if m and not _LEADING_HANDLES.fullmatch(s + " "):
                s = s[m.end() :]
        s = _HANDLE.sub("<USER>", s)
    return _strip_signatures(s)


def _financial(s: str) -> str:
    if "\u2212" in s:
        s = s.replace("\u2212", "-")
    s = _replace_urls(s)
    if "@" in s:
        s = _HANDLE.sub("<USER>", s)
    return s


_RULES: dict[str, Callable[[str], str]] = {"customer_service": _customer_service, "financial": _financial}


def is_single_spaced(s: str) -> bool:
    """No white space but single spaces between words (as cleaning leaves it): `" ".join(s.split()) == s`, quicker."""
    return s.isprintable() and "  " not in s and s[:1] != " " and s[-1:] != " "


def _one_pass(s: str, rules: Callable[[str], str]) -> tuple[str, bool]:
    """One pass of all steps; the flag says whether the result is known to be final (pure-ASCII path)."""
    if not s.isprintable():
        s = _JUNK.sub("", s)
    final = s.isascii()
    if "&" in s:
        t = _unescape(s)
        if t != s:
            s, final = t, final and t.isascii()
    if "<" in s:
        s = _strip_tags(s)
    if not final:
        if "\u0338" in s:
            s = _PLACEHOLDER_SLASH.sub(r"\1", s)
        s = unicodedata.normalize("NFKC", s)
    if not is_single_spaced(s):
        s = " ".join(s.split())
    if s:
        s = rules(s)
    return s, final


def _clean(text: str, rules: Callable[[str], str]) -> str:
    if not isinstance(text, str):
        raise InputError(
            f"clean_text expects str, found {type(text).__name__}: {text!r:.80}",
            hint="drop or fill missing values (NaN/None) in the text column before cleaning",
        )
    s, final = _one_pass(text, rules)
    for _ in range(_MAX_PASSES):
        if final:
            break
        t, _ = _one_pass(s, rules)
        final = t == s
        s = t
    return s


def clean_text(text: str, *, domain: str) -> str:
    """Clean one text for `domain` (see the module docstring); idempotent, never raises on a str."""
    _check_domain(domain)
    return _clean(text, _RULES[domain])


def clean_batch(texts: Sequence[str], *, domain: str) -> list[str]:
    """`clean_text` over many texts, with the domain checked once."""
    _check_domain(domain)
    rules = _RULES[domain]
    return [_clean(t, rules) for t in texts]


def _dedup_key(text: str) -> str:
    s = text if text.isprintable() else _JUNK.sub("", text)
    if not s.isascii():
        s = unicodedata.normalize("NFKC", s)
    s = s.casefold()
    if "'" in s or "\u2019" in s or "\u02bc" in s:
        s = _APOSTROPHE.sub("", s)
    if s.isascii():
        return " ".join(_DEDUP_ASCII_FAST.findall(s))
    return " ".join(
        tok
        for tok in _DEDUP_ANY.findall(s)
        if len(tok) > 1 or tok.isalnum() or (not tok.isascii() and unicodedata.category(tok)[0] == "S")
    )


def normalize_for_dedup(text: str) -> str:
    """Key for exact-duplicate detection: ``"Hello, World!!"`` and ``"hello world"`` give the same key."""
    return _dedup_key(text)


def normalize_batch(texts: Sequence[str]) -> list[str]:
    """`normalize_for_dedup` over many texts."""
    return [_dedup_key(t) for t in texts]
