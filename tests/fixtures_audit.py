"""Fixtures for the label-audit tests: a config with a tiny encoder, and a labeled store whose embeddings are cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.config import Config
from tests.fixtures_labelstudio import add_documents

#: Intents of the generated set.
K = 4
NAMES = ["balance", "card_lost", "refund", "transfer"]


@pytest.fixture
def audit_config(tiny_bert: Path, tmp_path: Path) -> Config:
    return Config.model_validate({"active_learning": {"model": str(tiny_bert), "device": "cpu",
                                                      "embeddings_dir": str(tmp_path / "emb")}})


def labeled_store(store: Any, config: Config, *, n: int = 160, seed: int = 0
                  ) -> tuple[list[int], np.ndarray, np.ndarray, list[str]]:
    """n documents of K intents with 10% flipped labels; their embeddings (clustered by true intent) are put in
    the cache under the configured encoder, as `curate encode` would have done."""
    from curation.embeddings import EmbeddingCache, text_hashes
    from curation.encoder import Encoder

    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    flipped = rng.random(n) < 0.1
    given = np.where(flipped, (y + rng.integers(1, K, n)) % K, y)
    texts = [f"customer message {i} about {NAMES[y[i]]}" for i in range(n)]
    ids = add_documents(store, texts, labels=[NAMES[g] for g in given])
    centers = rng.normal(size=(K, 32))
    x = centers[y] + 0.3 * rng.normal(size=(n, 32))
    encoder = Encoder(config.active_learning.model, device="cpu")
    EmbeddingCache(str(config.active_learning.embeddings_dir), encoder.key).put(
        text_hashes(texts), (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return ids, y, flipped, texts


def add_votes(store: Any, rows: list[tuple[int, str, str]], *, origin: str = "labelstudio", start: int = 1) -> None:
    from store.engine import insert_ignore
    from store.models import Annotation

    with store.connect() as conn:
        insert_ignore(conn, Annotation.__table__, [  # type: ignore[arg-type]
            {"document_id": d, "annotator": who, "label": lab, "labels": [lab], "origin": origin,
             "ls_annotation_id": start + k, "ls_task_id": start + k, "project_id": 1}
            for k, (d, who, lab) in enumerate(rows)], conflict=["ls_annotation_id"])
