"""`curate sample` on a store (SQLite and PostgreSQL): what it selects, what it records, what it excludes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.config import Config
from curation.errors import ConfigError, InputError
from pipelines.sample import encode_documents, sample
from store.active import model_versions_frame, predictions_frame, selections_frame
from store.engine import open_store
from store.runs import list_runs
from tests.fixtures_labelstudio import add_documents


def config(**al: Any) -> Config:
    return Config.model_validate({"active_learning": {"min_labels": 12, **al}})


def fill(store: Any, banking: tuple[pd.DataFrame, pd.DataFrame], *, labeled_per_class: int = 4) -> tuple[list[int],
                                                                                                          list[int]]:
    """Labeled documents (imported labels) and an unlabeled pool from the BANKING77 slice; returns both id lists."""
    train = banking[0]
    first = train.groupby("category").head(labeled_per_class)
    rest = train.drop(first.index)
    labeled = add_documents(store, first["text"].tolist(), labels=first["category"].tolist(), source="labeled")
    pool = add_documents(store, rest["text"].tolist(), source="pool")
    return labeled, pool


def test_sample_selects_records_and_excludes_pending(store, tiny_bert: Path, banking_slice) -> None:  # type: ignore[no-untyped-def]
    labeled, pool = fill(store, banking_slice)
    cfg = config()
    first = sample(store, config=cfg, strategy="margin", n=10, model=str(tiny_bert), device="cpu")
    assert first["selected"] == 10 and first["pool"] == len(pool) and first["labeled"] == len(labeled)
    assert first["cold_start"] is False and first["strategy_used"] == "margin"
    assert first["round"] == 0 and first["model_version"].startswith("fast-")
    assert first["embeddings"] == {"cached": 0, "encoded": len(labeled) + len(pool)}
    picked = [s["document_id"] for s in first["selections"]]
    assert len(set(picked)) == 10 and set(picked) <= set(pool)
    scores = [s["score"] for s in first["selections"]]
    assert scores == sorted(scores, reverse=True)

    sel = selections_frame(store, run_id=first["run_id"])
    assert sel["document_id"].tolist() == picked and sel["rank"].tolist() == list(range(10))
    assert set(sel["strategy"]) == {"margin"} and set(sel["model_version"]) == {first["model_version"]}
    assert set(sel["seed"]) == {0} and set(sel["round"]) == {0}
    preds = predictions_frame(store, document_ids=picked)
    assert len(preds) == 10 and set(preds["model_version"]) == {first["model_version"]}
    for probs, label in zip(preds["probs"], preds["label"], strict=True):
        assert len(probs) == 6 and abs(sum(probs.values()) - 1) < 1e-3 and max(probs, key=probs.get) == label
    mv = model_versions_frame(store)
    assert mv["version"].tolist() == [first["model_version"]]
    assert mv["metrics"][0]["n_train"] == len(labeled) and len(mv["labels"][0]) == 6
    (run,) = list_runs(store, kind="sample")
    assert run["status"] == "ok" and run["stats"]["selected"] == 10 and run["params"]["strategy"] == "margin"

    second = sample(store, config=cfg, strategy="entropy", n=10, model=str(tiny_bert), device="cpu")
    assert second["round"] == 1 and second["pending_excluded"] == 10 and second["pool"] == len(pool) - 10
    assert not {s["document_id"] for s in second["selections"]} & set(picked)
    assert second["embeddings"] == {"cached": len(labeled) + len(pool) - 10, "encoded": 0}
    assert second["model_version"] == first["model_version"]  # same training set, same model: one row
    assert len(model_versions_frame(store)) == 1

    again = sample(store, config=cfg, strategy="margin", n=5, model=str(tiny_bert), device="cpu",
                   include_pending=True)
    assert again["pool"] == len(pool) and again["pending_excluded"] == 0


def test_cold_start_uses_diversity(sqlite_url: str, tiny_bert: Path, banking_slice) -> None:  # type: ignore[no-untyped-def]
    store = open_store(sqlite_url)
    add_documents(store, banking_slice[0]["text"].tolist()[:60], source="pool")
    add_documents(store, ["card never arrived", "pin blocked"], labels=["card_arrival", "pin_blocked"],
                  source="few")
    result = sample(store, config=config(), strategy="margin", n=8, model=str(tiny_bert), device="cpu")
    assert result["cold_start"] is True and result["strategy_used"] == "kmeans"
    assert "only 2 labeled" in result["note"] and result["model_version"] is None
    assert result["selected"] == 8 and result["predictions"] == 0
    assert set(selections_frame(store)["strategy"]) == {"kmeans"}


def test_errors_are_clear(sqlite_url: str, tiny_bert: Path) -> None:
    store = open_store(sqlite_url)
    with pytest.raises(InputError, match="no documents"):
        sample(store, config=config(), n=5, model=str(tiny_bert), device="cpu")
    add_documents(store, ["a", "b"], labels=["x", "y"])
    with pytest.raises(ConfigError, match="valid strategies: random"):
        sample(store, config=config(), strategy="nope", n=5)
    with pytest.raises(InputError, match="pool of customer_service is empty"):
        sample(store, config=config(), n=5, model=str(tiny_bert), device="cpu")
    assert [r["status"] for r in list_runs(store, kind="sample")] == ["error"]


def test_encode_fills_the_cache_once(sqlite_url: str, tiny_bert: Path, banking_slice) -> None:  # type: ignore[no-untyped-def]
    store = open_store(sqlite_url)
    add_documents(store, banking_slice[1]["text"].tolist()[:30])
    first = encode_documents(store, config=config(), model=str(tiny_bert), device="cpu")
    assert first["encoded"] == 30 and first["cached"] == 0
    assert Path(first["cache"]).parent == Path(sqlite_url.split(":///", 1)[1]).parent / "embeddings"
    add_documents(store, ["a brand new message"])
    second = encode_documents(store, config=config(), model=str(tiny_bert), device="cpu")
    assert second["encoded"] == 1 and second["cached"] == 30


def test_cli_json(sqlite_url: str, tiny_bert: Path, banking_slice, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = open_store(sqlite_url)
    fill(store, banking_slice, labeled_per_class=3)
    cfg = tmp_path / "curate.toml"
    cfg.write_text(f'[active_learning]\nmodel = "{tiny_bert}"\ndevice = "cpu"\nmin_labels = 10\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["sample", "--strategy", "entropy", "--n", "7", "--domain", "customer_service",
                                   "--db", sqlite_url, "--config", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key in ("selected", "pool", "labeled", "model_version", "seconds"):
        assert key in out
    assert out["selected"] == 7 and out["labeled"] == 18 and len(out["selections"]) == 7
    bad = CliRunner().invoke(app, ["sample", "--strategy", "nope", "--db", sqlite_url, "--config", str(cfg)])
    assert bad.exit_code != 0


@pytest.mark.integration
def test_sample_push_sends_priority_order_with_predictions(sqlite_url, tiny_bert, banking_slice, ls_client,  # type: ignore[no-untyped-def]
                                                           ls_config) -> None:
    store = open_store(sqlite_url)
    fill(store, banking_slice)
    cfg = ls_config.model_copy(update={"active_learning": config().active_learning})
    result = sample(store, config=cfg, strategy="margin", n=6, model=str(tiny_bert), device="cpu", push=True)
    push = result["push"]
    assert push["pushed"] == 6 and push["with_predictions"] == 6
    tasks = [t for page in ls_client.iter_tasks(push["project_id"], include=("id", "data", "predictions"),
                                                all_fields=True) for t in page]
    by_id = sorted(tasks, key=lambda t: t["id"])
    assert [t["data"]["document_id"] for t in by_id] == [s["document_id"] for s in result["selections"]]
    assert all(t["predictions"] and t["predictions"][0]["model_version"] == result["model_version"] for t in tasks)
    # Pushed and still unlabeled: not selected again.
    nxt = sample(store, config=cfg, strategy="margin", n=6, model=str(tiny_bert), device="cpu")
    assert not {s["document_id"] for s in nxt["selections"]} & {t["data"]["document_id"] for t in tasks}
    assert np.isfinite([s["score"] for s in nxt["selections"]]).all()


def test_finetune_mode_records_its_model(sqlite_url: str, tiny_bert: Path, banking_slice) -> None:  # type: ignore[no-untyped-def]
    store = open_store(sqlite_url)
    fill(store, (banking_slice[0].groupby("category").head(8), banking_slice[1]), labeled_per_class=3)
    cfg = config(finetune_epochs=1)
    result = sample(store, config=cfg, strategy="bald", n=4, mode="finetune", model=str(tiny_bert), device="cpu")
    assert result["selected"] == 4 and result["strategy_used"] == "bald" and result["mode"] == "finetune"
    assert result["model_version"].startswith("finetune-") and result["predictions"] == 4
    (row,) = model_versions_frame(store).to_dict("records")
    assert row["mode"] == "finetune" and row["params"]["epochs"] == 1 and str(tiny_bert) in row["encoder"]
