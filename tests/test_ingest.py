"""Ingest end to end through the pipeline function and the CLI, on both store backends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.config import Config
from pipelines.ingest import ingest_files
from store.documents import annotations_frame, documents_frame, quarantine_frame, store_status
from store.engine import open_store
from tests.conftest import REPO, shared_data

SAMPLES = REPO / "pipelines" / "sample_data"
CS = SAMPLES / "customer_service.csv"
FIN = SAMPLES / "financial.jsonl"
CS_ARGS = dict(text_column="text", label_column="intent", id_column="ticket_id", group_column="customer")
FIN_ARGS = dict(text_column="headline", label_column="sentiment", id_column="id", group_column="company")


def _balanced(r: dict) -> bool:
    return r["rows_read"] == r["stored"] + r["duplicates"] + r["quarantined"]


def test_sample_data_both_domains(store) -> None:
    cs = ingest_files(store, [CS], domain="customer_service", **CS_ARGS)
    fin = ingest_files(store, [FIN], domain="financial", **FIN_ARGS)
    for r in (cs, fin):
        assert _balanced(r), r
        assert r["stored"] > 100
        assert r["duplicates"] > 0
        assert r["quarantined"] > 0
        assert r["near_duplicate_clusters"] > 0
    assert cs["pii_masked"].get("CARD", 0) >= 2
    assert cs["pii_masked"].get("EMAIL", 0) >= 1
    assert set(cs["quarantine_reasons"]) & {"empty_text", "too_long", "malformed_row", "empty_after_cleaning"}
    assert set(fin["quarantine_reasons"]) & {"bad_json", "missing_field", "empty_text"}

    frame = documents_frame(store, domain="customer_service", columns=("id", "text", "cluster_id", "content_hash"))
    texts = " ".join(frame["text"])
    assert "4111 1111 1111 1111" not in texts and "4111111111111111" not in texts
    assert "<CARD>" in texts
    assert frame["content_hash"].is_unique
    assert frame["cluster_id"].notna().all()

    q = quarantine_frame(store)
    assert len(q) == cs["quarantined"] + fin["quarantined"]
    assert q["raw_payload"].notna().all()

    ann = annotations_frame(store)
    assert (ann["origin"] == "import").all()
    assert ann["annotator"].str.startswith("import:").all()
    status = store_status(store)
    assert status["documents"] == cs["stored"] + fin["stored"]
    assert status["quarantined"] == cs["quarantined"] + fin["quarantined"]
    assert status["labeled_documents"] > 0 and status["unlabeled_documents"] > 0
    assert status["tasks"] == 0


def test_reingest_stores_nothing_new(store) -> None:
    first = ingest_files(store, [CS], domain="customer_service", **CS_ARGS)
    again = ingest_files(store, [CS], domain="customer_service", **CS_ARGS)
    assert again["stored"] == 0
    assert again["rows_read"] == first["rows_read"]
    assert _balanced(again)
    assert again["quarantined"] == first["quarantined"]
    assert again["quarantine_reasons"] == first["quarantine_reasons"]
    assert again["already_ingested"] == first["rows_read"]
    assert again["duplicates"] == first["stored"] + first["duplicates"]
    # Every chunk was recorded before: none is cleaned, masked or tokenized again.
    assert not {"clean", "mask_pii", "tokenize", "prepare"} & set(again["stage_seconds"])
    status = store_status(store)
    assert status["documents"] == first["stored"]
    assert status["quarantined"] == first["quarantined"]
    assert len(annotations_frame(store)) == first["labels_imported"]


def test_duplicates_keep_conflicting_labels(store, tmp_path: Path) -> None:
    f = tmp_path / "dups.csv"
    f.write_text(
        "text,label,conv\n"
        "My card has not arrived yet,card_arrival,c1\n"
        "my card has NOT arrived yet!!,lost_card,c2\n"
        "How do I change my PIN?,change_pin,c3\n"
        "My card has not arrived yet,card_arrival,c4\n",
        encoding="utf-8",
    )
    r = ingest_files(store, [f], domain="customer_service", label_column="label", group_column="conv")
    assert (r["rows_read"], r["stored"], r["duplicates"], r["quarantined"]) == (4, 2, 2, 0)
    ann = annotations_frame(store)
    card_doc = ann.groupby("document_id")["label"].apply(sorted)
    assert sorted(card_doc.tolist(), key=len)[-1] == ["card_arrival", "card_arrival", "lost_card"]


def test_near_duplicates_share_a_cluster(store, tmp_path: Path) -> None:
    base = ("I was charged twice for the same purchase at the grocery store yesterday evening and I would like "
            "to get one of the two payments refunded to my account as soon as possible please")
    near = base.replace("yesterday", "last")
    other = "What exchange rate do you use when I pay in euros abroad with my debit card?"
    f = tmp_path / "near.csv"
    pd.DataFrame({"text": [base, near, other]}).to_csv(f, index=False)
    r = ingest_files(store, [f], domain="customer_service")
    assert r["stored"] == 3 and r["near_duplicate_clusters"] == 1
    frame = documents_frame(store, columns=("id", "text", "cluster_id")).set_index("id")
    c = frame["cluster_id"].tolist()
    assert c[0] == c[1] != c[2]
    # A later run joins the existing cluster.
    g = tmp_path / "later.csv"
    pd.DataFrame({"text": [base.replace("grocery", "corner")]}).to_csv(g, index=False)
    ingest_files(store, [g], domain="customer_service")
    frame = documents_frame(store, columns=("id", "cluster_id"))
    assert frame["cluster_id"].value_counts().max() == 3


def test_documents_without_a_signature_are_still_known(store, tmp_path: Path) -> None:
    """A document written without a MinHash signature (by another tool, or a store older than signatures) is not
    in the near-duplicate index, but its text is known: ingesting it again makes a duplicate, not a second copy."""
    from sqlalchemy import text as sql

    f = tmp_path / "first.csv"
    pd.DataFrame({"text": ["Where is my new card? It has been two weeks.", "How do I close my account?"]}).to_csv(
        f, index=False)
    ingest_files(store, [f], domain="customer_service")
    with store.engine.begin() as conn:
        conn.execute(sql("UPDATE documents SET minhash = NULL"))
    g = tmp_path / "second.csv"
    pd.DataFrame({"text": ["where is my new card?? it has been two weeks", "Can I get a refund?"]}).to_csv(
        g, index=False)
    r = ingest_files(store, [g], domain="customer_service")
    assert r["stored"] == 1 and r["duplicates"] == 1 and _balanced(r)
    assert store_status(store)["documents"] == 3


def test_signatures_stored_by_older_versions_still_count(sqlite_url: str, tmp_path: Path) -> None:
    """Stores written before signatures were compact hold 4-byte values: a later ingest reads them as their low
    16 bits and finds near-duplicates among them as among its own."""
    from sqlalchemy import text as sql

    from pipelines.clean import normalize_batch
    from pipelines.dedup import MinHashParams, signatures

    s = open_store(sqlite_url)
    base = ("My card payment at the airport hotel was declined twice although there was enough money on the "
            "account and the card is not blocked, please check what went wrong with it")
    f = tmp_path / "old.csv"
    pd.DataFrame({"text": [base, "How do I order a new PIN for my card?"]}).to_csv(f, index=False)
    ingest_files(s, [f], domain="customer_service")
    with s.engine.begin() as conn:
        rows = conn.execute(sql("SELECT id, text, length(minhash) FROM documents")).all()
        assert {r[2] for r in rows} == {128}  # 64 values of 2 bytes
        ing = Config().ingest
        params = MinHashParams(num_perm=ing.num_perm, bands=ing.bands, shingle_size=ing.shingle_size)
        full = signatures(normalize_batch([r[1] for r in rows]), params=params)
        for (doc_id, _, _), sig in zip(rows, full, strict=True):
            conn.execute(sql("UPDATE documents SET minhash = :m WHERE id = :i"), {"m": sig.tobytes(), "i": doc_id})
    g = tmp_path / "new.csv"
    pd.DataFrame({"text": [base.replace("airport", "station")]}).to_csv(g, index=False)
    r = ingest_files(s, [g], domain="customer_service")
    assert r["stored"] == 1 and r["near_duplicates"] == 1
    frame = documents_frame(s, columns=("id", "cluster_id", "text")).set_index("text")
    assert frame.loc[base.replace("airport", "station"), "cluster_id"] == frame.loc[base, "id"]


def test_missing_column_is_clear_and_writes_nothing(sqlite_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(CS), "--domain", "customer_service", "--text-column", "body",
                              "--db", sqlite_url])
    assert res.exit_code == 2
    assert "body" in res.output and "text" in res.output
    store = open_store(sqlite_url)
    assert store_status(store)["documents"] == 0


def test_missing_file_exit_2(sqlite_url: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "nope.csv"), "--domain", "financial",
                                   "--db", sqlite_url])
    assert res.exit_code == 2
    assert "nope.csv" in res.output


def test_unknown_domain_exit_2(sqlite_url: str) -> None:
    res = CliRunner().invoke(app, ["ingest", str(CS), "--domain", "medical", "--db", sqlite_url])
    assert res.exit_code == 2
    assert "customer_service" in res.output


def test_cli_json_contract(sqlite_url: str) -> None:
    res = CliRunner().invoke(app, ["ingest", str(FIN), "--domain", "financial", "--text-column", "headline",
                                   "--label-column", "sentiment", "--id-column", "id", "--db", sqlite_url, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("rows_read", "stored", "duplicates", "near_duplicate_clusters", "quarantined",
                "quarantine_reasons", "pii_masked", "seconds"):
        assert key in out
    assert _balanced(out)
    st = json.loads(CliRunner().invoke(app, ["status", "--db", sqlite_url, "--json"]).stdout)
    for key in ("documents", "labeled_documents", "unlabeled_documents", "duplicates", "quarantined",
                "annotations", "annotated_documents", "tasks", "per_source", "per_domain"):
        assert key in st
    assert st["documents"] == out["stored"]
    docs = json.loads(CliRunner().invoke(app, ["docs", "--db", sqlite_url, "--json", "--limit", "5"]).stdout)
    assert len(docs["documents"]) == 5
    assert set(docs["documents"][0]) >= {"id", "external_id", "text", "labels", "source", "domain", "cluster"}
    quar = json.loads(CliRunner().invoke(app, ["quarantine", "--db", sqlite_url, "--json"]).stdout)
    assert quar["quarantined"] == out["quarantined"]


def test_db_url_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    monkeypatch.setenv("CURATE_DATABASE_URL", f"sqlite:///{db}")
    res = CliRunner().invoke(app, ["ingest", str(FIN), "--domain", "financial", "--text-column", "headline",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert db.exists()


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "curate.toml"
    good.write_text('[domains.financial]\nlabels = ["positive", "negative", "neutral"]\n')
    res = CliRunner().invoke(app, ["config", "check", "--config", str(good), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["domains"]["financial"]["labels"] == 3
    bad = tmp_path / "bad.toml"
    bad.write_text("[ingest]\nchunk_rowz = 5\n")
    res = CliRunner().invoke(app, ["config", "check", "--config", str(bad)])
    assert res.exit_code == 2
    assert "chunk_rowz" in res.output


def test_chunked_ingest_matches_single_chunk(tmp_path: Path) -> None:
    """Chunk boundaries and worker processes change nothing: the same documents, duplicates and clusters."""
    results = []
    for chunk, workers in ((100, 0), (50_000, 0), (100, 1), (100, 2)):
        s = open_store(f"sqlite:///{tmp_path / f'c{chunk}_{workers}.db'}")
        cfg = Config.model_validate({"ingest": {"chunk_rows": chunk, "workers": workers}})
        r = ingest_files(s, [CS], domain="customer_service", config=cfg, **CS_ARGS)
        assert r["workers"] == workers
        frame = documents_frame(s, columns=("content_hash", "cluster_id", "id", "text"))
        partition = sorted(sorted(g) for g in frame.groupby("cluster_id")["content_hash"].apply(list))
        results.append((r["stored"], r["duplicates"], r["quarantined"], r["pii_masked"], partition,
                        sorted(frame["text"]), len(annotations_frame(s))))
    assert all(res == results[0] for res in results[1:])


def test_failure_inside_a_transaction_keeps_the_committed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several chunks share a transaction (`commit_rows`): a failure in the middle rolls back the open one only,
    the store stays usable (no lock left behind), and a re-run stores exactly what is missing."""
    import store.documents as ds

    cfg = Config.model_validate({"ingest": {"chunk_rows": 100, "commit_rows": 200, "workers": 0}})
    words = ["card", "refund", "transfer", "pin", "fee", "abroad", "limit", "blocked", "late", "twice"]
    texts = [f"my {words[i // 2 % 10]} and {words[i // 20 % 10]} problem, ticket {i // 2}" for i in range(600)]
    data = tmp_path / "tickets.csv"
    pd.DataFrame({"text": texts, "label": [words[i % 7] for i in range(600)]}).to_csv(data, index=False)
    args = dict(text_column="text", label_column="label")
    s = open_store(f"sqlite:///{tmp_path / 'fail.db'}")
    real = ds.insert_occurrences
    calls = {"n": 0}

    def fail_fourth(conn, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("disk on fire")
        return real(conn, rows)

    monkeypatch.setattr(ds, "insert_occurrences", fail_fourth)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_files(s, [data], domain="customer_service", config=cfg, **args)
    monkeypatch.setattr(ds, "insert_occurrences", real)
    # Chunks 1-2 were committed together; chunk 3 was in the transaction that chunk 4 failed in.
    rows = pd.read_sql("SELECT row_number FROM occurrences UNION ALL SELECT row_number FROM quarantine",
                       s.engine)["row_number"]
    assert sorted(rows) == list(range(1, 201))
    assert store_status(s)["documents"] == 100 and store_status(s)["duplicates"] == 100
    r = ingest_files(s, [data], domain="customer_service", config=cfg, **args)
    ref_store = open_store(f"sqlite:///{tmp_path / 'ref.db'}")
    ref = ingest_files(ref_store, [data], domain="customer_service", config=cfg, **args)
    assert r["already_ingested"] == 200 and r["rows_read"] == ref["rows_read"] == 600
    got, want = store_status(s), store_status(ref_store)
    for key in ("documents", "duplicates", "quarantined", "annotations"):
        assert got[key] == want[key], key
    assert sorted(documents_frame(s)["content_hash"]) == sorted(documents_frame(ref_store)["content_hash"])


@pytest.mark.parametrize("workers", [0, 1])
def test_texts_prepared_in_an_earlier_chunk_are_not_prepared_again(tmp_path: Path, workers: int) -> None:
    """A text repeated in a later chunk is a duplicate: its tokens, sentences and signature are not computed again,
    and the results are those of one big chunk, also when chunks are prepared both here and in a worker. A text
    first met at a row that an earlier run recorded under another hash (e.g. before a cleaning rule changed) is not
    in the store under its hash: the writer prepares it itself when it comes again."""
    from sqlalchemy import text as sql

    import pipelines.prepare as prep

    words = ["card", "refund", "transfer", "pin", "fee", "abroad", "limit", "blocked", "late", "twice"]
    texts = [f"my {words[j % 10]} and {words[j // 10 % 10]} problem number {j}." for j in (i % 70 for i in range(600))]
    data = tmp_path / "repeats.csv"
    pd.DataFrame({"text": texts, "label": ["x"] * 600}).to_csv(data, index=False)
    results = []
    # chunk, memory limit: 5 texts makes the memory forget (repeats look new, collide on insert and are read back)
    for chunk, limit in ((100, None), (10_000, None), (100, 5)):
        s = open_store(f"sqlite:///{tmp_path / f'r{chunk}_{workers}_{limit}.db'}")
        cfg = Config.model_validate({"ingest": {"chunk_rows": chunk, "workers": workers}})
        with pytest.MonkeyPatch.context() as mp:
            if limit is not None and workers == 0:
                mp.setattr(prep, "_PREPARED_LIMIT", limit)
            r = ingest_files(s, [data], domain="customer_service", config=cfg, text_column="text",
                             label_column="label")
        assert _balanced(r) and r["stored"] == 70 and r["duplicates"] == 530
        if workers and chunk == 100 and limit is None:
            # The worker takes a second to start: this process prepares some chunks itself meanwhile (of six, the
            # ones not handed to the worker yet), with a memory of its own, and nothing changes.
            assert r["chunks_prepared_here"] >= 1
        frame = documents_frame(s, columns=("id", "text", "cluster_id", "n_tokens", "n_sentences"))
        assert set(frame["cluster_id"]) <= set(frame["id"])
        results.append(frame.drop(columns="id").to_dict("records"))
        assert len(annotations_frame(s)) == 600
    assert results[0] == results[1] == results[2]

    # The store holds row 1's text under another hash; rows 1-100 are recorded, row 71 (same text) is not yet.
    s = open_store(f"sqlite:///{tmp_path / f'r100_{workers}_None.db'}")
    with s.engine.begin() as conn:
        conn.execute(sql("UPDATE documents SET content_hash = 'old-' || content_hash WHERE row_number = 1"))
        conn.execute(sql("DELETE FROM annotations WHERE occurrence_id IN (SELECT id FROM occurrences "
                         "WHERE row_number > 100)"))
        conn.execute(sql("DELETE FROM occurrences WHERE row_number > 100"))
    longer = tmp_path / "repeats_again.csv"
    pd.DataFrame({"text": texts[:100] + [texts[0]] * 3, "label": ["x"] * 103}).to_csv(longer, index=False)
    cfg = Config.model_validate({"ingest": {"chunk_rows": 100, "workers": workers}})
    r = ingest_files(s, [longer], domain="customer_service", config=cfg, text_column="text", label_column="label",
                     source="repeats.csv")
    assert _balanced(r) and r["already_ingested"] == 100 and r["stored"] == 1 and r["duplicates"] == 102
    again = documents_frame(s, columns=("id", "text", "content_hash", "n_tokens", "n_sentences"))
    mine = again[(again["text"] == texts[0]) & ~again["content_hash"].str.startswith("old-")]
    assert len(mine) == 1 and mine["n_tokens"].iloc[0] > 0 and mine["n_sentences"].iloc[0] == 1


def test_ingest_restores_the_garbage_collector(tmp_path: Path) -> None:
    """Ingest runs with fewer collector passes (see pipelines.ingest._bulk_gc), also when it fails, and gives the
    caller's settings back."""
    import gc

    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    s = open_store(f"sqlite:///{tmp_path / 'gc.db'}")
    ingest_files(s, [CS], domain="customer_service", **CS_ARGS)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen
    with pytest.raises(Exception, match="text"):
        ingest_files(s, [CS], domain="customer_service", text_column="no_such_column")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_clusters_survive_a_writer_that_came_first(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A text stored by another writer between this run's look-up and its insert (possible only for a writer that
    skips the domain lock) is a duplicate, and cluster ids never point at the ids that were reserved for it."""
    import store.documents as ds

    base = ("I was charged twice for the same purchase at the grocery store yesterday evening and I would like "
            "to get one of the two payments refunded to my account as soon as possible please")
    first = tmp_path / "first.csv"
    pd.DataFrame({"text": [base, "What exchange rate do you use when I pay in euros abroad?"]}).to_csv(first,
                                                                                                   index=False)
    ingest_files(store, [first], domain="customer_service")
    before = documents_frame(store, columns=("id", "text", "cluster_id"))
    base_id = int(before.loc[before["text"] == base, "id"].iloc[0])

    # This run neither loads the stored signatures nor sees the stored hashes before its insert.
    monkeypatch.setattr(ds, "iter_index_rows", lambda *a, **k: iter(()))
    real_lookup = ds.lookup_hashes
    calls = {"n": 0}

    def blind_first(conn, domain, hashes):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return {} if calls["n"] == 1 else real_lookup(conn, domain, hashes)

    monkeypatch.setattr(ds, "lookup_hashes", blind_first)
    second = tmp_path / "second.csv"
    near = base.replace("yesterday", "last")
    pd.DataFrame({"text": [base, near, "Is there a fee for topping up by bank transfer?"]}).to_csv(second,
                                                                                                 index=False)
    r = ingest_files(store, [second], domain="customer_service")
    assert calls["n"] >= 2  # the insert found the conflict and read the real ids back
    assert r["stored"] == 2 and r["duplicates"] == 1 and _balanced(r)
    after = documents_frame(store, columns=("id", "text", "cluster_id")).set_index("text")
    assert len(after) == 4
    assert set(after["cluster_id"]) <= set(after["id"])  # every cluster id is a stored document
    assert after.loc[near, "cluster_id"] == base_id
    assert after.loc[base, "id"] == base_id


def _wait_for_documents(db: str, *, documents: int, timeout: float = 120) -> None:
    """Return once a running ingest into the SQLite store `db` has committed more than `documents` documents (or at
    the timeout).

    Polled with plain reads and no store opened: the store's own transactions (opening it checks its migrations)
    take SQLite's write lock first, and one waiting for it between the ingest's back-to-back transactions could
    starve until the ingest had ended, too late to kill anything.
    """
    import sqlite3

    path = db.removeprefix("sqlite:///")
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.05)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
                if conn.execute("SELECT count(*) FROM documents").fetchone()[0] > documents:
                    return
        except sqlite3.Error:  # not created yet, or no documents table yet
            continue


@pytest.mark.slow
def test_killed_ingest_resumes_without_gaps_or_duplicates(tmp_path: Path) -> None:
    data = shared_data("banking77", "train.csv")
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    cfg = tmp_path / "curate.toml"
    cfg.write_text("[ingest]\nchunk_rows = 500\ncommit_rows = 1000\n")
    cmd = [sys.executable, "-m", "curation.cli", "ingest", str(data), "--domain", "customer_service",
           "--label-column", "category", "--db", db, "--config", str(cfg), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    _wait_for_documents(db, documents=1000)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = open_store(db)
    partial = store_status(store)["documents"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    out = json.loads(done.stdout)
    assert _balanced(out)
    assert out["rows_read"] == len(pd.read_csv(data))
    fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    ref = ingest_files(fresh, [data], domain="customer_service", label_column="category")
    final = store_status(store)
    assert 0 < partial <= final["documents"]
    assert final["documents"] == ref["stored"]
    assert final["duplicates"] == ref["duplicates"]
    assert len(annotations_frame(store)) == len(annotations_frame(fresh))


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_clearly_and_a_rerun_completes(tmp_path: Path) -> None:
    """A worker process that dies (the kernel's OOM killer, a signal) ends the run with a clear error instead of a
    hang, keeps the committed transactions, and the same command run again stores exactly the rest."""
    import psutil

    from benchmarks.ingest.make_data import make_data

    data = tmp_path / "rows.csv"
    make_data(rows=60_000, out=data, seed=1, data_dir=shared_data("banking77", "train.csv").parents[1])
    db = f"sqlite:///{tmp_path / 'w.db'}"
    cfg = tmp_path / "curate.toml"
    cfg.write_text("[ingest]\nchunk_rows = 500\ncommit_rows = 1000\nworkers = 1\n")
    cmd = [sys.executable, "-m", "curation.cli", "ingest", str(data), "--domain", "customer_service",
           "--text-column", "text", "--label-column", "label", "--id-column", "id", "--db", db, "--config",
           str(cfg), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    _wait_for_documents(db, documents=1000)
    workers = [c for c in proc.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
    assert workers, "the ingest runs one worker process"
    for w in workers:
        w.kill()
    _, err = proc.communicate(timeout=120)  # fails the run, does not hang
    store = open_store(db)
    assert proc.returncode == 1, err[-2000:]
    assert "worker process stopped unexpectedly" in err and "run the same command again" in err
    partial = store_status(store)["documents"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    out = json.loads(done.stdout)
    assert _balanced(out) and out["already_ingested"] > 0
    fresh = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    ref = ingest_files(fresh, [data], domain="customer_service", text_column="text", label_column="label",
                       id_column="id")
    final = store_status(store)
    assert 0 < partial < final["documents"] == ref["stored"]
    assert final["duplicates"] == ref["duplicates"]
    assert len(annotations_frame(store)) == len(annotations_frame(fresh))


@pytest.mark.integration
def test_real_datasets(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'real.db'}")
    airline = ingest_files(s, [shared_data("twitter_us_airline_sentiment", "Tweets.csv")],
                           domain="customer_service", label_column="airline_sentiment", id_column="tweet_id")
    assert _balanced(airline) and airline["rows_read"] == 14640
    assert airline["duplicates"] > 100
    frame = documents_frame(s, domain="customer_service", columns=("id", "text"))
    assert not frame["text"].str.contains("&amp;", regex=False).any()
    fpb = ingest_files(s, [shared_data("financial_phrasebank", "Sentences_66Agree.txt"),
                           shared_data("financial_phrasebank", "Sentences_50Agree.txt")], domain="financial")
    assert _balanced(fpb)
    fin = documents_frame(s, domain="financial", columns=("id", "text"))
    assert not fin["text"].str.contains("Ã|â€|\ufffd", regex=True).any()
    ann = annotations_frame(s, domain="financial")
    assert set(ann["label"]) == {"positive", "negative", "neutral"}
    cfpb = ingest_files(s, [shared_data("cfpb_consumer_complaints_slice", "Consumer_Complaints.csv")],
                        domain="financial", text_column="Consumer_complaint_narrative",
                        label_column="Product", id_column="Complaint_ID")
    assert _balanced(cfpb)
    assert cfpb["quarantine_reasons"].get("empty_text", 0) > 1000


def test_example_config_is_valid_and_complete() -> None:
    """curate.example.toml names every config key (set or commented out) and validates."""
    import tomllib

    from curation.config import Config, load_config

    example = REPO / "curate.example.toml"
    load_config(example)
    text = example.read_text()
    data = tomllib.loads(text)
    for section, field in Config.model_fields.items():
        if section == "path":
            continue
        assert f"[{section}" in text, section
        model = field.annotation
        if section == "domains":
            continue
        for key in model.model_fields:  # type: ignore[union-attr]
            assert key in data.get(section, {}) or f"# {key} = " in text, f"{section}.{key}"


def test_worker_count_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import ingest as ing

    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_text("text\nhello\n")
    with big.open("wb") as fh:  # sparse: the size counts, not the content
        fh.truncate(ing._AUTO_WORKER_BYTES)
    monkeypatch.setattr(ing.os, "cpu_count", lambda: 2)
    assert ing._workers(None, [big], auto=True) == 1
    assert ing._workers(None, [small], auto=True) == 0
    assert ing._workers(None, [big], auto=False) == 0  # library calls stay in-process
    assert ing._workers(3, [small], auto=False) == 3  # an explicit setting always wins
    monkeypatch.setattr(ing.os, "cpu_count", lambda: 1)
    assert ing._workers(None, [big], auto=True) == 0
