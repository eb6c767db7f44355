"""The CPU-heavy part of an ingest chunk (pipelines/prepare.py): what it remembers between chunks of a run changes
how much it computes, never what it returns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import pipelines.prepare as prep
from pipelines.clean import clean_batch
from pipelines.dedup import MinHashParams
from pipelines.pii import PII_TYPES, mask_batch, mask_each
from pipelines.tokenize import default_splitter

PARAMS = MinHashParams(num_perm=64, bands=16, shingle_size=1, threshold=0.8)
SPLITTER = default_splitter()

BASE = [
    "My card was charged twice, please refund me.",
    "Call me on 415-555-0132 or mail jane.doe@example.com about card 4111 1111 1111 1111",
    "   ",
    "&amp;&amp;",
    "@united flight UA 123 delayed again!!! http://t.co/abc",
    "My card was charged twice, please refund me!",  # another raw text, the same normalized text
    "IBAN GB82 WEST 1234 5698 7654 32 for the transfer.",
    "What is the fee for a transfer abroad? I need it today.",
]


def _chunks() -> list[list[str]]:
    """Chunks that repeat rows within and across chunks, with PII, blank and duplicate-key rows among them."""
    rng = np.random.default_rng(0)
    rows = [BASE[int(i)] if i < len(BASE) else f"question number {int(i)} about my account" for i in
            rng.integers(0, len(BASE) + 30, size=400)]
    return [rows[lo : lo + 50] for lo in range(0, 400, 50)]


def _run(chunks: list[list[str]], scope: str | None) -> list[prep.Prepared]:
    return [prep.prepare(texts=c, domain="customer_service", pii_types=list(PII_TYPES), params=PARAMS,
                         splitter=SPLITTER, scope=scope) for c in chunks]


def _rows(p: prep.Prepared) -> dict[int, tuple[str, int, int, bytes]]:
    return {i: (p.masked[j], p.n_tokens[j], p.n_sentences[j], p.sigs[j].tobytes()) for j, i in enumerate(p.first)}


@pytest.mark.parametrize("limit", [None, 3])
def test_remembered_texts_give_what_preparing_them_gives(monkeypatch: pytest.MonkeyPatch, limit: int | None) -> None:
    """Per chunk, the same hashes, empty rows and PII counts (repeats count every time) with the memory of raw
    texts as without it; a new row's masked text, counts and signature are the same too, also when the memory of
    prepared hashes forgets (limit 3) and remembered raw texts must be prepared again."""
    if limit is not None:
        monkeypatch.setattr(prep, "_PREPARED_LIMIT", limit)
    chunks = _chunks()
    plain = _run(chunks, None)
    calls: list[int] = []
    real = prep._clean_mask_key

    def counted(texts: list[str], **kw: object) -> object:
        calls.append(len(texts))
        return real(texts, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(prep, "_clean_mask_key", counted)
    remembered = _run(chunks, f"run-{limit}")
    reused = 0
    for c, a, b in zip(chunks, plain, remembered, strict=True):
        assert b.hashes == a.hashes and b.empty == a.empty and b.pii == a.pii
        assert set(b.first) <= set(a.first)
        want = _rows(a)
        assert all(want[i] == row for i, row in _rows(b).items())
        reused += len(set(a.first) - set(b.first))
        assert b.pii == mask_batch(clean_batch(c, domain="customer_service"))[1]  # every row counts
    # Fewer texts cleaned, masked and normalized than rows; with the forgetful limit, remembered texts that are new
    # to `_PreparedBefore` again were prepared again (a second call in a chunk) and every chunk's first rows are back.
    assert sum(calls) < sum(map(len, chunks)) and sum(plain[0].pii.values()) > 0
    if limit is None:
        assert reused > 0 and len(calls) == len(chunks)
    else:
        assert len(calls) > len(chunks) and all(a.first == b.first for a, b in zip(plain, remembered, strict=True))


def test_the_memory_is_bounded_and_keeps_pii_of_what_it_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prep, "_RAW_MEMO_TEXTS", 10)
    chunks = _chunks()
    plain = _run(chunks, None)
    for a, b in zip(plain, _run(chunks, "bounded"), strict=True):
        assert b.hashes == a.hashes and b.pii == a.pii and b.empty == a.empty
        assert len(prep._RawMemo.young) < 10 and len(prep._RawMemo.old) <= 60
        assert set(prep._RawMemo.pii) <= set(prep._RawMemo.young) | set(prep._RawMemo.old)


def test_mask_each_counts_per_text_what_mask_batch_counts_in_all() -> None:
    texts = [BASE[1], BASE[0], BASE[6], BASE[1]]
    masked, found = mask_each(texts)
    want_masked, want_counts = mask_batch(texts)
    assert masked == want_masked
    total: Counter[str] = Counter()
    for c in found:
        total.update(c or {})
    assert total == want_counts and found[1] is None and found[0] == found[3]


def test_an_ingest_forgets_the_texts_it_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, the run's memories are gone once `ingest_files` returns (a long-lived caller keeps no texts)."""
    import pandas as pd

    from pipelines.ingest import ingest_files
    from store.engine import open_store

    data = tmp_path / "rows.csv"
    pd.DataFrame({"text": [r for c in _chunks() for r in c]}).to_csv(data, index=False)
    seen: list[int] = []
    real = prep._RawMemo.remember

    def spy(texts: list[str], hashes: list[str], found: dict[str, dict[str, int]]) -> None:
        real(texts, hashes, found)
        seen.append(len(prep._RawMemo.young) + len(prep._RawMemo.old))

    monkeypatch.setattr(prep._RawMemo, "remember", spy)
    r = ingest_files(open_store(f"sqlite:///{tmp_path / 's.db'}"), [data], domain="customer_service")
    assert r["rows_read"] > 300 and r["duplicates"] > 0 and max(seen) > 0
    assert prep._RawMemo.scope is None and not prep._RawMemo.young and not prep._RawMemo.old
    assert prep._PreparedBefore.scope is None and not prep._PreparedBefore.hashes
