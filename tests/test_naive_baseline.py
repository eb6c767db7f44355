"""The benchmark's naive baseline (benchmarks/ingest/naive.py) does what it says it does."""

from __future__ import annotations

from pathlib import Path

import pytest
from nltk.tokenize.punkt import PunktSentenceTokenizer

from benchmarks.ingest.naive import TOKENIZERS, run_naive

TEXTS = [
    "my card was charged twice. can you refund it? thanks!",
    "flight 123 delayed... again. worst airline, i'd say. mr. smith agrees",
    "apple inc. said it sold 5.2% more phones in the u.s. market.",
    "",
    "no punctuation at all here",
]


def test_word_tokenize_is_nltks_own_with_default_punkt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Punkt's English model is not installed, `nltk.word_tokenize` with Punkt's default parameters gives
    the baseline's tokens: the same two steps."""
    import nltk.tokenize as nt

    monkeypatch.setattr(nt, "_get_punkt_tokenizer", lambda language="english": PunktSentenceTokenizer())
    ours = TOKENIZERS["word_tokenize"]()
    for text in TEXTS:
        assert ours(text) == nt.word_tokenize(text)
    # The sentence split is what Treebank alone lacks: a period inside the text stays on its word there.
    assert ours(TEXTS[0])[4:6] == ["twice", "."]
    assert TOKENIZERS["treebank"]()(TEXTS[0])[4] == "twice."


@pytest.mark.parametrize("tokenizer", sorted(TOKENIZERS))
def test_naive_run_keeps_distinct_non_empty_texts(tmp_path: Path, tokenizer: str) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("id,text,label,source\n1,Hello &amp; welcome,pos,a\n2,hello & welcome,pos,a\n3,,neg,b\n"
                   "4,See https://x.co/a now. Bye!,neg,b\n")
    out = run_naive(csv, f"sqlite:///{tmp_path / 'n.db'}", tokenizer=tokenizer)
    assert out["rows"] == 4 and out["kept"] == 2 and out["tokenizer"] == tokenizer
    with pytest.raises(ValueError, match="unknown tokenizer"):
        run_naive(csv, f"sqlite:///{tmp_path / 'n.db'}", tokenizer="spacy")
