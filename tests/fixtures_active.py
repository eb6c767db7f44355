"""Fixtures for the active-learning tests: tiny random BERTs (milliseconds to load) and a small labeled slice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(autouse=True)
def _private_weight_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Weight fingerprints are cached in a test folder, not the user's ~/.cache."""
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "curate-cache"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with the MiniLM tokenizer, saved as a model folder."""
    from curation.encoder import save_random_bert

    return save_random_bert(tmp_path_factory.mktemp("tiny_bert"), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, seed=0)


@pytest.fixture(scope="session")
def shared_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the session, so the MiniLM encodes each test text once."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="session")
def banking_slice() -> tuple[pd.DataFrame, pd.DataFrame]:
    """BANKING77 restricted to 6 intents: 40 train and 20 test texts each (columns text, category)."""
    from tests.conftest import shared_data

    train = pd.read_csv(shared_data("banking77", "train.csv"))
    test = pd.read_csv(shared_data("banking77", "test.csv"))
    keep = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "pin_blocked", "top_up_failed",
            "cash_withdrawal_charge"]
    tr = train[train["category"].isin(keep)].groupby("category", group_keys=False).head(40).reset_index(drop=True)
    te = test[test["category"].isin(keep)].groupby("category", group_keys=False).head(20).reset_index(drop=True)
    return tr, te
