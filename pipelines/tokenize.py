"""Token and sentence counts for stored documents, fast enough for the ingest hot path.

Word tokens come from spaCy's rule-based English tokenizer (`spacy.blank("en")`, no model),
adjusted so that cleaning placeholders such as `<URL>` and whole emoji (skin tones, ZWJ families,
flags) are one token each. Sentences come from NLTK's Punkt, which needs no data download: the
default splitter knows a built-in list of abbreviations, and `train_sentence_splitter` learns
more (and which words start sentences) from a sample of the ingested corpus.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import string
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import islice
from typing import Any

import numpy as np

from pipelines.clean import is_single_spaced


def _import_punkt() -> Any:
    """NLTK's Punkt module, imported without running NLTK's package `__init__` until someone needs it.

    Why: `import nltk` imports most of NLTK, SciPy and scikit-learn (about a second and 150 MB per process, and an
    ingest worker is a second process), while Punkt needs none of that. `nltk` is registered as a bare package
    whose first access to anything else (`nltk.word_tokenize`, `nltk.FreqDist`) runs the real `__init__` into it,
    so code that imports nltk later in the same process sees the whole package. Where nltk is already imported,
    nothing changes.
    """
    import importlib
    import importlib.metadata
    import importlib.util
    import sys
    import types

    if "nltk" not in sys.modules:
        spec = importlib.util.find_spec("nltk")
        if spec is not None and spec.origin and spec.submodule_search_locations is not None:
            stub = types.ModuleType("nltk")
            stub.__path__ = list(spec.submodule_search_locations)
            stub.__spec__, stub.__file__ = spec, spec.origin
            stub.__version__ = importlib.metadata.version("nltk")  # type: ignore[attr-defined]
            origin = spec.origin

            def complete(name: str) -> Any:
                if name.startswith("__"):
                    raise AttributeError(name)
                if importlib.util.find_spec(f"nltk.{name}") is not None:  # a submodule: import just that
                    return importlib.import_module(f"nltk.{name}")
                del stub.__getattr__  # type: ignore[attr-defined]
                with open(origin, encoding="utf-8") as fh:
                    exec(compile(fh.read(), origin, "exec"), stub.__dict__)  # noqa: S102 - NLTK's own __init__
                return getattr(stub, name)

            stub.__getattr__ = complete  # type: ignore[method-assign]
            sys.modules["nltk"] = stub
    return importlib.import_module("nltk.tokenize.punkt")


_punkt_module = _import_punkt()
from nltk.tokenize.punkt import (  # noqa: E402
    PunktLanguageVars,
    PunktParameters,
    PunktSentenceTokenizer,
    PunktToken,
    PunktTrainer,
)

__all__ = [
    "DEFAULT_ABBREVIATIONS",
    "SentenceSplitter",
    "count_tokens",
    "default_splitter",
    "train_sentence_splitter",
]

#: Abbreviations Punkt must not end a sentence after: lower case, final period dropped.
DEFAULT_ABBREVIATIONS = frozenset(
    {
        # companies and legal forms
        "corp", "inc", "ltd", "co", "plc", "oyj", "abp", "llc", "l.p", "lp", "n.v", "s.a", "a.s",
        "ag", "bhd", "pty", "cos", "bros", "assn", "intl", "mfg", "dept", "govt",
        # people
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "messrs",
        # money, quantities, references (not "no", "min", "max": they also end sentences)
        "approx", "vol", "fig", "pct", "mln", "bln", "mn", "bn", "tel", "ext", "acct",
        "qty", "ave", "blvd", "rd",
        # latin and compounds
        "vs", "etc", "e.g", "i.e", "cf", "viz", "a.m", "p.m", "u.s", "u.k", "u.s.a", "e.u",
        # months and days (not "sat", "sun")
        "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
        "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri",
    }
)  # fmt: skip

_PLACEHOLDER = r"<[A-Z][A-Z0-9_]*>"
_FLAG = r"[\U0001F1E6-\U0001F1FF]{2}"
_EMOJI_TAIL = r"[\U0001F3FB-\U0001F3FF\uFE0F\u20E3]*"
# Sentence-final punctuation followed by more text, or a line break followed by more text.
# Written to start with one character class, so that `re` scans for it quickly instead of trying the pattern at
# every position (the same texts match as with "[.!?…][closers]*\s+\S|\n\s*\S"; tested).
_CANDIDATE = re.compile(r"[.!?\u2026\n](?:(?<=\n)\s*\S|(?<!\n)[\"'\u2019\u201d)\]]*\s+\S)")
# A line break inside a sentence: a word or comma before it and a lower-case word after it.
_SOFT_BREAK = re.compile(r"(?<=[\w,;:\-])[ \t]*\n\s*(?=[a-z])")
_HARD_BREAK = re.compile(r"[ \t]*\n\s*")
# Segments with nothing but tags, mentions, placeholders, links, emoji and punctuation.
_NOT_CONTENT = re.compile(r"[#@$]\w+|<[A-Z][A-Z0-9_]*>|(?:https?://|www\.)\S+")
_WORD_CHAR = re.compile(r"[^\W_]")
_WHITESPACE = re.compile(r"\s+")

_PUNKT_WHITESPACE = tuple(string.whitespace)
_CLOSERS = frozenset("\"')]}\u2018\u2019\u201c\u201d\xab\xbb")

_lock = threading.Lock()
_nlp: Any = None
_piece_counts: dict[str, int] = {}
_MEMO_LIMIT = 500_000


def _import_spacy() -> Any:
    """Import spaCy without letting thinc import torch.

    Why: thinc imports torch whenever it is installed (it is, for the encoder), which costs about 180 MB of RSS
    and seconds of start-up in every ingest, while the rule-based tokenizer never uses it. Where torch is
    already imported (a process that also encodes), nothing changes.
    """
    import sys

    if "torch" in sys.modules or "thinc" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


def _build_nlp() -> Any:
    spacy = _import_spacy()
    from spacy.lang.char_classes import LIST_ICONS
    from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex

    nlp = spacy.blank("en")
    icon = LIST_ICONS[0]
    emoji = rf"(?:{_FLAG}|{icon}{_EMOJI_TAIL}(?:\u200d{icon}{_EMOJI_TAIL})*)"

    def patched(entries: Iterable[str]) -> list[str]:
        return [_PLACEHOLDER] + [emoji if e == icon else e for e in entries]

    # Counting needs no lexical attributes; computing them for every new word was most of the cost.
    nlp.vocab.lex_attr_getters = {}
    tokenizer = nlp.tokenizer
    tokenizer.prefix_search = compile_prefix_regex(patched(nlp.Defaults.prefixes)).search
    tokenizer.suffix_search = compile_suffix_regex(patched(nlp.Defaults.suffixes)).search
    tokenizer.infix_finditer = compile_infix_regex(patched(nlp.Defaults.infixes)).finditer
    return nlp


def _get_nlp() -> Any:
    global _nlp
    if _nlp is None:
        with _lock:
            if _nlp is None:
                _nlp = _build_nlp()
    return _nlp


def _get_tokenizer() -> Any:
    return _get_nlp().tokenizer


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Number of spaCy tokens in each text, exactly `len(tokenizer(text))`.

    `<URL>`-style placeholders and emoji sequences are one token each. spaCy tokenizes every
    run of non-space characters on its own, so a count is the sum of memoized per-run counts
    plus its whitespace tokens (a whitespace run is one token, except a single " " after a
    word, which belongs to that word). Runs not seen before are tokenized together in one Doc.
    Several times faster than one Doc per text; equality is tested on the real datasets.
    """
    nlp = _get_nlp()
    out: list[int] = []
    for lo in range(0, len(texts), 4096):
        chunk = texts[lo : lo + 4096]
        split = [t.split() for t in chunk]
        if len(_piece_counts) > _MEMO_LIMIT:
            _piece_counts.clear()
        get = _piece_counts.__getitem__
        # Optimistic: one memo lookup per piece; only texts with an unknown piece look for what to learn.
        counts: list[int] = []
        retry: list[int] = []
        for k, pieces in enumerate(split):
            try:
                counts.append(sum(map(get, pieces)))
            except KeyError:
                counts.append(0)
                retry.append(k)
        if retry:
            missing = {p for k in retry for p in split[k] if p not in _piece_counts}
            # The zone frees this chunk's strings and lexemes, so the vocab does not grow.
            with nlp.memory_zone():
                _learn_pieces(nlp.tokenizer, missing)
            for k in retry:
                counts[k] = sum(map(get, split[k]))
        out.extend(
            n + (0 if is_single_spaced(text) or " ".join(pieces) == text else _whitespace_tokens(text))
            for n, text, pieces in zip(counts, chunk, split, strict=True)
        )
    return out


def _whitespace_tokens(text: str) -> int:
    runs = _WHITESPACE.findall(text)
    single_after_word = runs.count(" ") - (1 if text[:1] == " " and runs[0] == " " else 0)
    return len(runs) - single_after_word


def _learn_pieces(tokenizer: Any, pieces: set[str]) -> None:
    """Token count of each new piece, from one Doc per ~100k characters of pieces.

    Pieces are joined with " \\x00 " so that no special case (":)" and the like, which spaCy
    matches across whitespace) can span two pieces: each count is that of the piece alone.
    """
    # A piece of ASCII letters only, or digits only, is one token unless it is a special case ("cannot"): no
    # prefix, suffix or infix rule of the English tokenizer matches inside it (tested). Half the new pieces.
    rules = tokenizer.rules
    plain = [p for p in pieces if p.isascii() and (p.isalpha() or p.isdigit()) and p not in rules]
    _piece_counts.update(zip(plain, [1] * len(plain), strict=True))
    pieces = pieces.difference(plain)
    todo = sorted(p for p in pieces if "\x00" not in p)
    _piece_counts.update((p, len(tokenizer(p))) for p in pieces if "\x00" in p)
    while todo:
        batch, size = [], 0
        while todo and size < 100_000:
            batch.append(todo.pop())
            size += len(batch[-1]) + 3
        lengths = np.array([len(p) for p in batch])
        starts = np.concatenate([[0], np.cumsum(lengths[:-1] + 3)])
        idx = tokenizer(" \x00 ".join(batch)).to_array("IDX")
        owner = np.searchsorted(starts, idx, side="right") - 1
        inside = idx < starts[owner] + lengths[owner]
        _piece_counts.update(
            zip(batch, np.bincount(owner[inside], minlength=len(batch)).tolist(), strict=True)
        )


def _period_context_finditer(lang_vars: Any) -> Callable[[str], Any]:
    r"""`finditer` of Punkt's period-context pattern (each candidate sentence end and the token after it).

    NLTK runs every pattern of its own under a wall-clock timeout, a backstop against patterns that backtrack
    catastrophically; checking the clock was two thirds of the matching here. NLTK's own period-context pattern
    (`PunktLanguageVars`, not a subclass) is one character class and a lookahead, ``(?=[punct]|\s+(\S+))``, whose
    only backtracking is over the white space after one candidate: linear in the text, so stdlib `re` runs it
    without a timeout (same matches, tested). Other language variables keep NLTK's guarded pattern.
    """
    pattern = lang_vars.period_context_re()
    rx = getattr(pattern, "_rx", None)
    if type(lang_vars) is PunktLanguageVars and rx is not None and isinstance(getattr(rx, "pattern", None), str):
        return re.compile(rx.pattern, re.UNICODE | re.VERBOSE).finditer
    return pattern.finditer  # type: ignore[no-any-return]


def _untimed(pattern: Any) -> Any:
    """The compiled `regex` pattern inside NLTK's `TimedPattern`: the same engine, so the same answers, without
    the wall-clock check on every call.

    Why: Punkt matches a few short patterns against every word it looks at (the type, ellipsis, initial and
    alphabetic tests, the word tokenizer); the timeout's bookkeeping cost more than the matching. The patterns are
    NLTK's own and linear on these inputs, and the texts are bounded by `[ingest] max_chars`.
    """
    return getattr(pattern, "_rx", pattern)


_NON_PUNCT = _untimed(_punkt_module._re_non_punct)


class _Token(PunktToken):
    """`PunktToken` with NLTK's patterns run untimed (see `_untimed`)."""

    __slots__ = ()
    _RE_ELLIPSIS = _untimed(PunktToken._RE_ELLIPSIS)
    _RE_NUMERIC = _untimed(PunktToken._RE_NUMERIC)
    _RE_INITIAL = _untimed(PunktToken._RE_INITIAL)
    _RE_ALPHA = _untimed(PunktToken._RE_ALPHA)

    @property
    def is_non_punct(self) -> Any:
        return _NON_PUNCT.search(self.type)


def _lang_vars() -> PunktLanguageVars:
    """NLTK's English language variables, with the word tokenizer pattern run untimed (see `_untimed`)."""
    lang = PunktLanguageVars()
    lang._re_word_tokenizer = _untimed(lang._word_tokenizer_re())
    return lang


class _Punkt(PunktSentenceTokenizer):
    """Punkt with its per-candidate decisions memoized and a faster `sentences` (same answers, tested).

    `text_contains_sentbreak` gets a context like "acting!!! I" or "Corp. said"; period contexts repeat
    ("thanks. I") and are cached. In `sentences`, a candidate whose sentence-end character is "!" or "?" is a
    break without asking: Punkt's word tokenizer makes that character a token of its own (it is followed by
    white space or punctuation), the first pass marks it a break, the second pass only revisits tokens that end
    in a period, and the context always holds a token after it.
    """

    def __init__(self, params: PunktParameters) -> None:
        super().__init__(params, lang_vars=_lang_vars(), token_cls=_Token)
        self._decide = lru_cache(maxsize=1 << 16)(super().text_contains_sentbreak)
        self._period_contexts = _period_context_finditer(self._lang_vars)

    def text_contains_sentbreak(self, text: str) -> bool:
        return bool(self._decide(text))

    def sentences(self, text: str) -> list[str]:
        """Exactly `tokenize(text)` (realigned), in one loop instead of Punkt's chain of generators.

        Inlines `_match_potential_end_contexts` (finding the word before each candidate with `str.rfind`
        instead of a character loop), `_slices_from_text` and `_realign_boundaries`; equality with NLTK's own
        `tokenize` is tested on the real datasets and on generated text.
        """
        lang = self._lang_vars
        decide = self._decide  # its answer is only used for its truth
        cuts: list[tuple[int, int]] = []
        last_break = 0
        ps_start = ps_stop = 0
        prev: Any = None
        # Printable text has no white space but " " (cleaned text never has): one rfind instead of six.
        printable = text.isprintable()
        for m in self._period_contexts(text):
            ms = m.start()
            if printable:
                ws = text.rfind(" ", ps_stop, ms)
            else:
                ws = max([text.rfind(c, ps_stop, ms) for c in _PUNKT_WHITESPACE])
            rel = ws - ps_stop if ws >= 0 else 0  # NLTK's "index of the last whitespace, 0 if none"
            w_start = rel + ps_stop + 1 if rel else ps_start
            if prev is not None and ps_stop <= w_start:
                end = prev.group()
                if end == "!" or end == "?" or decide(text[ps_start:ps_stop] + end + prev.group("after_tok")):
                    cuts.append((last_break, prev.end()))
                    last_break = prev.start("next_tok") if prev.group("next_tok") else prev.end()
            prev, ps_start, ps_stop = m, w_start, ms
        if prev is not None and (prev.group() in ("!", "?")
                                 or decide(text[ps_start:ps_stop] + prev.group() + prev.group("after_tok"))):
            cuts.append((last_break, prev.end()))
            last_break = prev.start("next_tok") if prev.group("next_tok") else prev.end()
        cuts.append((last_break, len(text.rstrip())))
        out: list[str] = []
        realign = 0
        last = len(cuts) - 1
        match = lang.re_boundary_realignment.match
        for k, (s1, e1) in enumerate(cuts):
            s1 += realign
            if k < last:
                s2, e2 = cuts[k + 1]
                # The realignment pattern starts with a closing quote or bracket: skip the regex otherwise.
                r = match(text[s2:e2]) if text[s2 : s2 + 1] in _CLOSERS else None
                if r:
                    out.append(text[s1 : s2 + len(r.group(0).rstrip())])
                    realign = r.end()
                    continue
                realign = 0
            if s1 < e1:
                out.append(text[s1:e1])
        return out


class SentenceSplitter:
    """Punkt with line-break and social-text rules on top.

    A line break ends a sentence unless it sits inside one (a word or comma before it, a
    lower-case word after it). A segment with no words of its own (only hashtags, mentions,
    placeholders, links, emoji or punctuation, like the "#fail" after "never again!!") belongs
    to the sentence before it. Texts without a sentence-end candidate skip Punkt entirely.
    """

    def __init__(self, params: PunktParameters) -> None:
        self._punkt = _Punkt(params)
        self._pickled: tuple[str, bytes] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its parameters, and unpickled once per process: an ingest sends the splitter with every chunk
        to its workers, and a worker that made a new one per chunk would start its decision cache empty each time
        (Punkt then ran ~1.8x slower in workers than in-process)."""
        if self._pickled is None:
            blob = pickle.dumps(self._punkt._params, protocol=pickle.HIGHEST_PROTOCOL)
            self._pickled = (hashlib.sha1(blob).hexdigest(), blob)
        return (_received_splitter, self._pickled)

    @property
    def abbreviations(self) -> frozenset[str]:
        """Known abbreviations, lower case without the final period ("corp", "e.g")."""
        return frozenset(self._punkt._params.abbrev_types)

    def split(self, text: str) -> list[str]:
        """The sentences of `text`, stripped; none for a blank text."""
        if not text.strip():
            return []
        if not _CANDIDATE.search(text):
            return [text.strip()]
        return self._split_candidates(text)

    def _split_candidates(self, text: str) -> list[str]:
        """`split` of a text in which `_CANDIDATE` matches."""
        out: list[str] = []
        words: list[bool] = []  # _has_words of each kept sentence: of a merged one, that of either part
        for line in _lines(text):
            for sent in self._punkt.sentences(line):
                has = _has_words(sent)
                if out and not (has and words[-1]):
                    out[-1] = f"{out[-1]} {sent}"
                    words[-1] = words[-1] or has
                else:
                    out.append(sent)
                    words.append(has)
        return out

    def count(self, texts: Sequence[str]) -> list[int]:
        """Sentence count per text, 0 for a blank one."""
        search, split = _CANDIDATE.search, self._split_candidates
        return [len(split(t)) if search(t) else (1 if t and not t.isspace() else 0) for t in texts]


_RECEIVED: dict[str, SentenceSplitter] = {}


def _received_splitter(digest: str, blob: bytes) -> SentenceSplitter:
    """The splitter with these pickled parameters, made once per process (see `SentenceSplitter.__reduce__`)."""
    splitter = _RECEIVED.get(digest)
    if splitter is None:
        if len(_RECEIVED) >= 8:  # one per ingested file; a long-lived process keeps a few
            _RECEIVED.clear()
        splitter = _RECEIVED[digest] = SentenceSplitter(pickle.loads(blob))  # noqa: S301 - our own pickle
        splitter._pickled = (digest, blob)
    return splitter


def _has_words(segment: str) -> bool:
    # Most sentences start with a word character, which no hashtag, mention, placeholder or link can hold unless
    # the sentence starts with the link: answered without scanning the sentence (str.isalnum is re's [^\W_]).
    if segment[:1].isalnum() and not segment.startswith(("http", "www", "HTTP", "WWW")):
        return True
    if "#" in segment or "@" in segment or "$" in segment or "<" in segment or "http" in segment or "www." in segment:
        segment = _NOT_CONTENT.sub("", segment)
    return _WORD_CHAR.search(segment) is not None


def _lines(text: str) -> list[str]:
    if "\n" not in text:
        line = text.strip()
        return [line] if line else []
    joined = _SOFT_BREAK.sub(" ", text.strip())
    return [line for line in _HARD_BREAK.split(joined) if line]


def default_splitter() -> SentenceSplitter:
    """An untrained splitter that knows `DEFAULT_ABBREVIATIONS`."""
    params = PunktParameters()
    params.abbrev_types = set(DEFAULT_ABBREVIATIONS)
    return SentenceSplitter(params)


def train_sentence_splitter(
    texts: Iterable[str], *, max_texts: int = 50_000, include_defaults: bool = True
) -> SentenceSplitter:
    """Punkt trained unsupervised on (the first `max_texts` of) `texts`.

    It learns abbreviations, collocations and frequent sentence starters from the corpus. Punkt's
    penalty for abbreviations seen without a period is switched off: corpora like the Financial
    PhraseBank write "Inc" both ways, and the penalty would reject it. Abbreviations that the
    corpus itself contradicts (PhraseBank has "Corp" without a period 40% of the time) are still
    not learned, hence `include_defaults`, which adds `DEFAULT_ABBREVIATIONS`.
    """
    trainer = PunktTrainer(lang_vars=_lang_vars(), token_cls=_Token)
    trainer.IGNORE_ABBREV_PENALTY = True
    sample = [t for t in islice(texts, max_texts) if t and not t.isspace()]
    trainer.train("\n".join(sample), finalize=True)
    params = trainer.get_params()
    if include_defaults:
        params.abbrev_types |= DEFAULT_ABBREVIATIONS
    return SentenceSplitter(params)
