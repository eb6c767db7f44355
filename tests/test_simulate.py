"""`curate simulate` on a small real slice of BANKING77 (the packaged MiniLM, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import ConfigError, InputError
from curation.simulate import labels_to_reach, read_labeled_file, simulate


def test_simulate_learns_and_reports_curves(banking_slice, shared_embedding_cache: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = banking_slice
    result = simulate(train.rename(columns={"category": "label"}), test.rename(columns={"category": "label"}),
                      strategies=["random", "margin", "kmeans"], initial=12, batch=12, rounds=3, seeds=2,
                      device="cpu", cache_dir=shared_embedding_cache)
    assert set(result["strategies"]) == {"random", "margin", "kmeans"}
    for curve in result["strategies"].values():
        assert curve["labels"] == [12, 24, 36, 48]
        assert len(curve["accuracy_mean"]) == len(curve["accuracy_sd"]) == len(curve["macro_f1_mean"]) == 4
        assert len(curve["accuracy_runs"]) == 2
        assert curve["accuracy_mean"][-1] > 0.6  # six classes: chance is 0.17
    assert result["strategies"]["random"]["accuracy_runs"][0][0] == result["strategies"]["margin"]["accuracy_runs"][
        0][0]  # the same initial set per seed
    assert result["full_data"]["accuracy"] > 0.85 and result["full_data"]["labels"] == len(train)
    assert result["encoder"]["model"] == "all-MiniLM-L6-v2" and result["device"] == "cpu"
    assert set(result["labels_to_95pct_full"]) == {"random", "margin", "kmeans"}
    cache = result["embedding_cache"]
    assert cache["encoded"] + cache["cached"] == len(train) + len(test)
    again = simulate(train.rename(columns={"category": "label"}), test.rename(columns={"category": "label"}),
                     strategies=["random"], initial=12, batch=12, rounds=1, device="cpu",
                     cache_dir=shared_embedding_cache, full_reference=False)
    assert again["embedding_cache"]["encoded"] == 0
    assert again["strategies"]["random"]["accuracy_runs"][0] == result["strategies"]["random"]["accuracy_runs"][0][:2]


def test_cli_writes_json_and_plot(banking_slice, shared_embedding_cache: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = banking_slice
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    res = CliRunner().invoke(app, [
        "simulate", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.jsonl"),
        "--text-column", "text", "--label-column", "category", "--strategies", "random,entropy",
        "--initial", "12", "--batch", "12", "--rounds", "1", "--plot", str(tmp_path / "curves.png"),
        "--cache-dir", str(shared_embedding_cache), "--device", "cpu", "--db", f"sqlite:///{tmp_path}/x.db", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["strategies"]) == {"random", "entropy"}
    for key in ("labels", "accuracy_mean", "accuracy_sd", "macro_f1_mean"):
        assert len(out["strategies"]["entropy"][key]) == 2
    assert out["encoder"]["model"] == "all-MiniLM-L6-v2" and out["device"] == "cpu"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    pd.DataFrame({"body": ["a", "b"], "y": ["x", "y"]}).to_csv(f, index=False)
    with pytest.raises(InputError, match=r"no column\(s\) \['text'\]"):
        read_labeled_file(f, text_column="text", label_column="y")
    with pytest.raises(ConfigError, match="Unknown strategy"):
        simulate(f, f, text_column="body", label_column="y", strategies=["best"], initial=1, batch=1, rounds=0)
    with pytest.raises(ConfigError, match="exceeds the 2 training rows"):
        simulate(f, f, text_column="body", label_column="y", strategies=["random"], initial=1, batch=1, rounds=5)
    assert labels_to_reach([10, 20, 30], [0.5, 0.8, 0.9], 0.75) == 20
    assert labels_to_reach([10, 20], [0.5, 0.6], 0.75) is None


def test_finetune_mode_with_bald(banking_slice, tiny_bert: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train, test = (d.rename(columns={"category": "label"}).head(60) for d in banking_slice)
    result = simulate(train, test, strategies=["bald", "random"], initial=12, batch=6, rounds=1, mode="finetune",
                      model=str(tiny_bert), device="cpu", cache_dir=tmp_path / "emb", full_reference=False,
                      mc_samples=3, classifier_options={"epochs": 1, "batch_size": 8})
    assert result["mode"] == "finetune" and result["full_data"] is None
    for curve in result["strategies"].values():
        assert curve["labels"] == [12, 18] and all(0 <= a <= 1 for a in curve["accuracy_mean"])
