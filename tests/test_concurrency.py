"""Two `curate ingest` runs of the same file at the same time store every row exactly once (both backends)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.ingest import ingest_files
from store.documents import annotations_frame, store_status
from store.engine import open_store
from tests.conftest import REPO, shared_data


@pytest.mark.slow
def test_concurrent_ingests_store_each_row_once(db_url: str, tmp_path: Path) -> None:
    data = shared_data("banking77", "test.csv")
    cfg = tmp_path / "curate.toml"
    cfg.write_text("[ingest]\nchunk_rows = 300\n")
    cmd = [sys.executable, "-m", "curation.cli", "ingest", str(data), "--domain", "customer_service",
           "--label-column", "category", "--db", db_url, "--config", str(cfg), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    open_store(db_url).close()  # migrate first, so both runs race on data, not on the schema
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out))
    for o in outs:
        assert o["rows_read"] == o["stored"] + o["duplicates"] + o["quarantined"]
    store = open_store(db_url)
    ref = ingest_files(open_store(f"sqlite:///{tmp_path / 'ref.db'}"), [data], domain="customer_service",
                       label_column="category")
    status = store_status(store)
    assert status["documents"] == ref["stored"]
    assert sum(o["stored"] for o in outs) == ref["stored"]
    assert status["duplicates"] == ref["duplicates"]
    assert len(annotations_frame(store)) == ref["labels_imported"] == ref["rows_read"] - ref["quarantined"]
