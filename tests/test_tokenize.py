from __future__ import annotations

import csv
import pickle
import random
import re
import string
from pathlib import Path

import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

from pipelines import tokenize as tk
from pipelines.tokenize import (
    SentenceSplitter,
    count_tokens,
    default_splitter,
    train_sentence_splitter,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLE = "Nokia Corp. said on Tuesday that sales rose 5 %. Shares of Apple Inc. fell."


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


def _csv(relative: str, column: str = "text", limit: int = 3000) -> list[str]:
    with _need(DATA / relative).open(encoding="utf-8", errors="replace") as fh:
        return [r[column] for r in csv.DictReader(fh) if r[column]][:limit]


def _phrasebank() -> list[str]:
    folder = _need(DATA / "financial_phrasebank")
    lines = (folder / "Sentences_50Agree.txt").read_text(encoding="utf-8-sig").splitlines()
    for name in ("Sentences_66Agree.txt", "Sentences_75Agree.txt", "Sentences_AllAgree.txt"):
        lines += (folder / name).read_text(encoding="latin-1").splitlines()
    return list(dict.fromkeys(line.rsplit("@", 1)[0] for line in lines))


def _real_texts() -> list[str]:
    return (
        _csv("twitter_us_airline_sentiment/Tweets.csv")
        + _csv("banking77/train.csv")
        + _csv("twitter_financial_news_sentiment/sent_train.csv")
        + _csv("cfpb_consumer_complaints_slice/Consumer_Complaints.csv", "Consumer_complaint_narrative")
        + _phrasebank()[:2000]
    )


@pytest.mark.integration
def test_token_counts_equal_spacy_on_real_texts():
    texts = _real_texts()
    ours = tk._get_tokenizer()
    assert count_tokens(texts) == [len(ours(t)) for t in texts]
    # Where neither placeholders nor emoji occur, that is plain spaCy.
    plain = spacy.blank("en").tokenizer
    ascii_texts = [t for t in texts if t.isascii() and "<" not in t]
    assert len(ascii_texts) > 5000
    assert count_tokens(ascii_texts) == [len(plain(t)) for t in ascii_texts]


WORDS = ["hello", "Inc.", "don't", "<URL>", "<EMAIL>", "😍", "👍🏽", "3.5%", "$5", "U.S.", "(", ")", "!", "?", ",",
         "http://t.co/x", "e.g.", "'s", "A", "-", "#tag", "@user", "..."]  # fmt: skip
GAPS = ["", " ", " ", " ", "  ", "\n", " \n ", "\t", "\xa0", "\u2003", "\n\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(GAPS), st.sampled_from(WORDS)), max_size=12), st.sampled_from(GAPS))
def test_token_counts_equal_spacy_for_any_spacing(parts, tail):
    text = "".join(gap + word for gap, word in parts) + tail
    assert count_tokens([text]) == [len(tk._get_tokenizer()(text))]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(string.ascii_letters + string.digits)), min_size=1, max_size=12))
def test_plain_pieces_are_counted_without_spacy_as_spacy_counts_them(piece: str) -> None:
    """The short-cut in `_learn_pieces` (ASCII letters only or digits only: one token unless a special case)."""
    tok = tk._get_tokenizer()
    special = [p for p in tok.rules if p.isascii() and (p.isalpha() or p.isdigit())]
    assert any(len(tok(p)) > 1 for p in special)  # "cannot", "gonna": the reason for the exception
    tk._piece_counts.clear()
    pieces = [piece, piece.lower(), piece.upper(), piece.capitalize(), *special]
    assert count_tokens(pieces) == [len(tok(p)) for p in pieces]


def test_placeholders_and_emoji_are_one_token_each():
    tok = tk._get_tokenizer()
    cases = {
        "Call <PHONE> or see <URL>.": ["Call", "<PHONE>", "or", "see", "<URL>", "."],
        "(<EMAIL>)": ["(", "<EMAIL>", ")"],
        "mail<EMAIL>now": ["mail", "<EMAIL>", "now"],
        "ok 👍🏽 👨\u200d👩\u200d👧 🇬🇧🇺🇸 😍😍!": ["ok", "👍🏽", "👨\u200d👩\u200d👧", "🇬🇧", "🇺🇸", "😍", "😍", "!"],
    }
    for text, tokens in cases.items():
        assert [t.text for t in tok(text)] == tokens
        assert count_tokens([text]) == [len(tokens)]
    assert count_tokens(["", " ", "a  b", " a"]) == [0, 1, 3, 2]


def test_token_counting_does_not_grow_the_vocabulary():
    rng = random.Random(0)
    count_tokens(["warm up the tokenizer"])
    strings = len(tk._get_nlp().vocab.strings)
    texts = [" ".join(f"w{rng.randrange(10**9)}x" for _ in range(10)) for _ in range(2000)]
    assert count_tokens(texts) == [10] * len(texts)
    assert len(tk._get_nlp().vocab.strings) < strings + 100


def test_default_splitter_knows_financial_abbreviations():
    splitter = default_splitter()
    assert {"corp", "inc", "ltd", "plc", "oyj", "e.g", "u.s", "vs"} <= splitter.abbreviations
    assert splitter.split(EXAMPLE) == [
        "Nokia Corp. said on Tuesday that sales rose 5 %.",
        "Shares of Apple Inc. fell.",
    ]
    # Without the list, Punkt ends a sentence after every "Corp." and "Inc.".
    assert len(PunktSentenceTokenizer(PunktParameters()).tokenize(EXAMPLE)) == 4


@pytest.mark.integration
def test_punkt_trained_on_phrasebank_learns_abbreviations():
    corpus = _phrasebank()
    learned = train_sentence_splitter(corpus, include_defaults=False)
    assert {"inc", "u.s", "e.g"} <= learned.abbreviations
    text = "Shares of Apple Inc. fell sharply. Analysts were surprised."
    assert len(PunktSentenceTokenizer(PunktParameters()).tokenize(text)) == 3
    assert learned.count([text]) == [2]
    trained = train_sentence_splitter(corpus)
    assert trained.count([EXAMPLE]) == [2]
    assert trained.split(EXAMPLE)[1] == "Shares of Apple Inc. fell."


def test_social_text_counts():
    splitter = default_splitter()
    cases = {
        "": 0,
        "   \n ": 0,
        "no punctuation at all": 1,
        "Thanks!!! See you soon": 2,
        "What?! No way. Really": 3,
        "@united thanks... never again!! #fail": 1,
        "Great flight!! 😍😍 <URL>": 1,
        "Love it 😍\nWill fly again": 2,
        "@VirginAmerica\nwhere is our luggage #so slow at lax": 1,
        "I paid $5.50 at 3 p.m. today. Why?": 2,
        'He said "no." Then he left.': 2,
    }
    assert splitter.count(list(cases)) == list(cases.values())
    assert splitter.split("Love it 😍\nWill fly again") == ["Love it 😍", "Will fly again"]


@pytest.mark.integration
def test_fast_paths_give_the_same_answers():
    texts = _real_texts()
    splitter = default_splitter()
    assert splitter.count(texts) == [len(splitter.split(t)) for t in texts]
    # The "!"/"?" short-cut and the cache inside Punkt change nothing.
    params = splitter._punkt._params
    vanilla = PunktSentenceTokenizer(params)
    fast = SentenceSplitter(params)._punkt
    tricky = ["Inc.! Wow", "Apple Inc.!? The", "wow?!", "a ! b", "x.?", 'He said "no!" Then left.', "Inc. Inc. !Inc. ",
              "a!b. Next", "no?) Then", "x ?. y"]
    for t in texts + tricky:
        assert fast.tokenize(t) == vanilla.tokenize(t), t
        assert fast.sentences(t) == vanilla.tokenize(t), t


def _reference_split(splitter: SentenceSplitter, text: str) -> list[str]:
    """The splitting rules written plainly: NLTK's own Punkt, regex line handling, words checked on merged text."""
    vanilla = PunktSentenceTokenizer(splitter._punkt._params)
    if not text.strip():
        return []
    if not tk._CANDIDATE.search(text):  # no sentence end followed by more text: one sentence, Punkt not asked
        return [text.strip()]
    joined = tk._SOFT_BREAK.sub(" ", text.strip())
    out: list[str] = []
    for line in (x for x in tk._HARD_BREAK.split(joined) if x):
        for sent in vanilla.tokenize(line):
            if out and not all(tk._WORD_CHAR.search(tk._NOT_CONTENT.sub("", x)) for x in (sent, out[-1])):
                out[-1] = f"{out[-1]} {sent}"
            else:
                out.append(sent)
    return out


@pytest.mark.integration
def test_split_equals_the_plain_rules_on_real_texts():
    texts = _real_texts()
    texts += [f"{a} {b}" for a, b in zip(texts[::7], texts[3::7], strict=False)]  # two texts joined, as in merges
    texts += ["never again!! #fail @united", "Great.\n#win http://x.co/a", "ok. <URL> $AAPL. Then we left."]
    splitter = train_sentence_splitter(texts[:4000])
    for t in texts:
        assert splitter.split(t) == _reference_split(splitter, t), t


_PIECES = ["Inc.", "Corp.", "U.S.", "e.g.", "He", "said", "it", "sold", "5.2%", "$AAPL", "(a.)", '"Hi."', "Yes!",
           "no?!", "wow...", "--", "'", ")", "]", "\u201d", "\u00bb", ".", "!", "?", "The", "the", "x"]


@given(st.lists(st.sampled_from(_PIECES), max_size=25),
       st.lists(st.sampled_from([" ", "  ", "\t", " \x0b", "", "\x0c "]), max_size=25))
@settings(max_examples=400, deadline=None)
def test_inlined_punkt_equals_nltk_on_generated_text(pieces: list[str], gaps: list[str]) -> None:
    text = "".join(p + (gaps[i] if i < len(gaps) else " ") for i, p in enumerate(pieces))
    params = default_splitter()._punkt._params
    assert SentenceSplitter(params)._punkt.sentences(text) == PunktSentenceTokenizer(params).tokenize(text)


def test_splitter_survives_pickling_for_worker_processes():
    splitter = train_sentence_splitter(["Apple Inc. said it sold more phones. The U.S. market grew."] * 50)
    splitter.count([EXAMPLE])  # warm the caches, which must not travel
    copy = pickle.loads(pickle.dumps(splitter))
    assert copy.abbreviations == splitter.abbreviations
    assert copy.split(EXAMPLE) == splitter.split(EXAMPLE)
    # Sent again (an ingest sends it with every chunk): the same splitter, caches and all, not a new one.
    assert pickle.loads(pickle.dumps(splitter)) is copy
    other = train_sentence_splitter(["Acme Corp. filed. Mr. Smith left the firm today."] * 50)
    assert pickle.loads(pickle.dumps(other)) is not copy
    assert pickle.loads(pickle.dumps(other)).abbreviations == other.abbreviations


def test_punkt_import_leaves_the_rest_of_nltk_lazy_but_whole() -> None:
    """Importing the tokenizer module skips NLTK's heavy package import, and later NLTK users still get all of it."""
    import subprocess
    import sys

    code = (
        "import sys; import pipelines.tokenize as t; "
        "assert 'scipy' not in sys.modules and 'sklearn' not in sys.modules, 'nltk imported its dependencies'; "
        "assert t.default_splitter().count(['Apple Inc. rose. Shares fell.']) == [2]; "
        "import nltk; assert nltk.FreqDist(['a', 'a', 'b'])['a'] == 2; "
        "from nltk.tokenize import TreebankWordTokenizer as T; assert T().tokenize('a b.') == ['a', 'b', '.']; "
        "assert nltk.__version__"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_period_contexts_use_stdlib_re_only_for_nltks_own_pattern() -> None:
    """NLTK's default period-context pattern runs on stdlib `re` with the same matches; language variables of a
    subclass (another pattern, maybe) keep NLTK's timeout-guarded one."""
    from nltk.tokenize.punkt import PunktLanguageVars

    own = tk._period_context_finditer(PunktLanguageVars())
    assert isinstance(getattr(own, "__self__", None), re.Pattern)
    guarded = PunktLanguageVars().period_context_re()
    text = 'Inc. said "no!" Then (a.) left... U.S. growth?! 5.2%. x .\tY. ]'
    fields = ("after_tok", "next_tok")
    assert [(m.span(), m.group(*fields)) for m in own(text)] == [
        (m.span(), m.group(*fields)) for m in guarded.finditer(text)
    ]

    class Vars(PunktLanguageVars):
        sent_end_chars = (".", "?", "!", ";")

    other = tk._period_context_finditer(Vars())
    assert not isinstance(getattr(other, "__self__", None), re.Pattern)
    assert [m.start() for m in other("a; b. c")] == [1, 4]


@pytest.mark.integration
def test_untimed_punkt_learns_what_nltks_own_trainer_learns() -> None:
    """Training with the untimed patterns (`tk._untimed`) gives NLTK's own parameters, and the splitter's patterns
    are the plain `regex` ones behind NLTK's guard (nothing left for the clock to check)."""
    from nltk.tokenize.punkt import PunktTrainer

    texts = _real_texts()[:4000]
    ours = train_sentence_splitter(texts, include_defaults=False)._punkt._params
    trainer = PunktTrainer()
    trainer.IGNORE_ABBREV_PENALTY = True
    trainer.train("\n".join(t for t in texts if t and not t.isspace()), finalize=True)
    theirs = trainer.get_params()
    assert ours.abbrev_types == theirs.abbrev_types and ours.abbrev_types
    assert ours.collocations == theirs.collocations
    assert ours.sent_starters == theirs.sent_starters
    assert dict(ours.ortho_context) == dict(theirs.ortho_context)
    punkt = SentenceSplitter(ours)._punkt
    assert not hasattr(punkt._Token._RE_NUMERIC, "_rx") and not hasattr(punkt._lang_vars._word_tokenizer_re(), "_rx")


_OLD_CANDIDATE = re.compile(r"[.!?\u2026][\"'\u2019\u201d)\]]*\s+\S|\n\s*\S")


@given(st.text(alphabet=st.sampled_from(list(".!?\u2026\n \t\"')]\u2019\u201dax")), max_size=14))
@settings(max_examples=1000)
def test_candidate_pattern_matches_the_same_texts_as_its_plain_form(text: str) -> None:
    assert bool(tk._CANDIDATE.search(text)) == bool(_OLD_CANDIDATE.search(text))


@given(st.lists(st.sampled_from(["a", "Z", "7", "_", "#", "@", "$", "<URL>", "<", ">", "http://x", "https", "www.",
                                  "wwwx", " ", ".", "é", "٣", "😀", "HTTP"]), max_size=12).map("".join)
       | st.text(max_size=12))
@settings(max_examples=2000)
def test_has_words_shortcut_agrees_with_the_full_check(segment: str) -> None:
    """A sentence starting with a word character is answered without the scan; the answer must be the scan's."""
    full = tk._WORD_CHAR.search(tk._NOT_CONTENT.sub("", segment)) is not None
    assert tk._has_words(segment) == full
