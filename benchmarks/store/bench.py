"""Store bulk-load benchmark: occurrence-like and document-like rows into SQLite and PostgreSQL.

Measures the store's bulk path (`store.engine.insert_ignore`: sqlite3 executemany; on PostgreSQL a COPY straight into
the table, or a COPY into a temporary table + INSERT ... ON CONFLICT DO NOTHING when a batch collides) on new rows,
on a re-run where every row collides, and on batches with one late collision (the costly case for COPY-first), and
compares it in the same run with what a user would otherwise write: SQLAlchemy Core executemany of
`insert(t).on_conflict_do_nothing()` and ORM `add_all`.

    .venv/bin/python -m benchmarks.store.bench [--rows 200000] [--pg URL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

PG_ADMIN = os.environ.get("CURATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BATCH = 50_000


def _rows(n: int, source_id: int, domain: str = "customer_service", start: int = 0) -> list[dict]:
    docs = []
    for i in range(start, start + n):
        text = f"customer message number {i} about a card that has not arrived yet"
        docs.append({"domain": domain, "source_id": source_id, "row_number": i + 1,
                     "external_id": str(i), "group_key": None, "raw_text": text, "text": text,
                     "content_hash": hashlib.sha1(text.encode()).hexdigest(), "n_tokens": 12, "n_sentences": 1,
                     "meta": {"channel": "chat"}, "minhash": bytes(256)})
    return docs


def _occurrences(n: int, source_id: int, doc_id: int) -> list[dict]:
    return [{"source_id": source_id, "row_number": i + 1, "document_id": doc_id, "external_id": str(i),
             "group_key": None, "is_duplicate": True, "run_id": None} for i in range(n)]


def _timed(store: Any, rows: list[dict], load: Callable[[Any, list[dict]], int],
           role: str | None = None) -> tuple[float, int]:
    """Seconds to load `rows` in batches of BATCH inside one transaction (commit included), and rows inserted;
    as `role` (SET LOCAL ROLE) when given."""
    t0 = time.perf_counter()
    inserted = 0
    with store.connect() as conn:
        if role:
            conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
        for i in range(0, len(rows), BATCH):
            inserted += load(conn, rows[i:i + BATCH])
    return time.perf_counter() - t0, inserted


def _bench(url: str, n: int) -> dict:
    from sqlalchemy import func, select
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.orm import Session

    from store.engine import insert_ignore, open_store
    from store.models import Document, Occurrence

    store = open_store(url)
    doc_t, occ_t = Document.__table__, Occurrence.__table__
    doc_key, occ_key = ["domain", "content_hash"], ["source_id", "row_number"]

    def source(name: str) -> int:
        return _bench_source(store, name)

    def bulk(table: Any, key: list[str]) -> Callable[[Any, list[dict]], int]:
        return lambda conn, part: insert_ignore(conn, table, part, conflict=key)

    dialect_insert: Any = postgresql.insert if store.dialect == "postgresql" else sqlite.insert

    def core(table: Any, key: list[str]) -> Callable[[Any, list[dict]], int]:
        stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=key)
        return lambda conn, part: conn.execute(stmt, part).rowcount

    source_id = source("bench")
    # What a user would otherwise write, first (into the empty tables, the easier case) and on as many rows.
    core_s, got = _timed(store, _rows(n, source_id, domain="core"), core(doc_t, doc_key))
    with store.connect() as conn:
        assert conn.execute(select(func.count()).where(Document.domain == "core")).scalar_one() == n
        doc_id = conn.execute(select(func.min(Document.id))).scalar_one()
    core_narrow_s, _ = _timed(store, _occurrences(n, source("core"), doc_id), core(occ_t, occ_key))

    docs = _rows(n, source_id)
    bulk_s, got = _timed(store, docs, bulk(doc_t, doc_key))
    assert got == n, got
    conflict_s, got = _timed(store, docs, bulk(doc_t, doc_key))  # the same rows again: every one collides
    assert got == 0, got
    # New rows, but in each batch the second-to-last one is stored already: a COPY-first strategy meets the collision
    # at the very end of its (last) COPY, undoes it and goes through ON CONFLICT: its worst case.
    late = _rows(n, source_id, domain="late")
    stored = [late[min(i + BATCH, n) - 2] for i in range(0, n, BATCH)]
    with store.connect() as conn:
        insert_ignore(conn, doc_t, stored, conflict=doc_key)
    late_s, got = _timed(store, late, bulk(doc_t, doc_key))
    assert got == n - len(stored), got
    narrow_s, got = _timed(store, _occurrences(n, source_id, doc_id), bulk(occ_t, occ_key))
    assert got == n, got

    extra: dict[str, Any] = {}
    if store.dialect == "postgresql":
        extra = _pg_extra(store, n, source_id, doc_id, bulk(doc_t, doc_key), bulk(occ_t, occ_key))

    orm_n = min(n, BATCH)
    orm_docs = _rows(orm_n, source_id, domain="financial")
    t0 = time.perf_counter()
    with Session(store.engine) as s, s.begin():
        s.add_all([Document(**d) for d in orm_docs])
    orm_s = time.perf_counter() - t0
    store.close()
    rate, narrow_rate = n / bulk_s, n / narrow_s
    return {
        "rows": n,
        "batch": BATCH,
        "bulk_rows_per_s": round(rate),
        "narrow_rows_per_s": round(narrow_rate),
        "conflict_rows_per_s": round(n / conflict_s),
        "late_conflict_rows_per_s": round(n / late_s),
        "core_executemany_rows_per_s": round(n / core_s),
        "core_executemany_narrow_rows_per_s": round(n / core_narrow_s),
        "orm_add_all_rows": orm_n,
        "orm_add_all_rows_per_s": round(orm_n / orm_s),
        "speedup_vs_core": round(rate / (n / core_s), 1),
        "narrow_speedup_vs_core": round(narrow_rate / (n / core_narrow_s), 1),
        "speedup_vs_orm": round(rate / (orm_n / orm_s), 1),
        **extra,
    }


def _pg_extra(store: Any, n: int, source_id: int, doc_id: int, docs_load: Callable[[Any, list[dict]], int],
              occ_load: Callable[[Any, list[dict]], int]) -> dict[str, Any]:
    """PostgreSQL only: the same loads as a role that may not set session_replication_role (foreign keys checked
    by the server's per-row triggers), and the server's own ceiling for document rows: the rows just loaded, already
    in binary COPY format, copied into a table with the same indexes and defaults (no foreign keys), so the client
    does nothing but send bytes."""
    role = f"curate_bench_{uuid.uuid4().hex[:8]}"
    with store.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')
        conn.exec_driver_sql(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO "{role}"')
        conn.exec_driver_sql(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    try:
        plain_s, got = _timed(store, _rows(n, source_id, domain="plain"), docs_load, role=role)
        assert got == n, got
        plain_narrow_s, got = _timed(store, _occurrences(n, _bench_source(store, "plain"), doc_id), occ_load,
                                     role=role)
        assert got == n, got
    finally:
        with store.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
    cols = ("domain, source_id, run_id, row_number, external_id, group_key, raw_text, text, content_hash, "
            "cluster_id, n_tokens, n_sentences, pii, meta, minhash")
    with store.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            data = bytearray()
            out = f"COPY (SELECT {cols} FROM documents WHERE domain = 'customer_service') TO STDOUT (FORMAT BINARY)"
            with cur.copy(out) as cp:
                for block in cp:
                    data += block
            cur.execute("CREATE TABLE bench_server_copy (LIKE documents INCLUDING DEFAULTS INCLUDING INDEXES)")
    t0 = time.perf_counter()
    with store.connect() as conn:
        with conn.connection.driver_connection.cursor() as cur:
            with cur.copy(f"COPY bench_server_copy ({cols}) FROM STDIN (FORMAT BINARY)") as cp:
                view = memoryview(data)
                for i in range(0, len(view), 1 << 20):
                    cp.write(view[i:i + (1 << 20)])
    server_s = time.perf_counter() - t0
    with store.connect() as conn:
        conn.exec_driver_sql("DROP TABLE bench_server_copy")
    return {
        "plain_role_bulk_rows_per_s": round(n / plain_s),
        "plain_role_narrow_rows_per_s": round(n / plain_narrow_s),
        "server_only_copy_rows_per_s": round(n / server_s),
    }


def _bench_source(store: Any, name: str) -> int:
    from sqlalchemy import select

    from store.engine import insert_ignore
    from store.models import Source

    with store.connect() as conn:
        insert_ignore(conn, Source.__table__, [{"name": name, "domain": "customer_service", "path": None}],
                      conflict=["name"])
        return int(conn.execute(select(Source.id).where(Source.name == name)).scalar_one())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pg", default=PG_ADMIN)
    args = ap.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = _bench(f"sqlite:///{Path(tmp) / 'bench.db'}", args.rows)
        print("sqlite", results["sqlite"])
    try:
        import psycopg

        name = f"curate_bench_{uuid.uuid4().hex[:8]}"
        admin = args.pg.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        try:
            results["postgresql"] = _bench(f"{args.pg.rsplit('/', 1)[0]}/{name}", args.rows)
            print("postgresql", results["postgresql"])
        finally:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # no server: say so in the result instead of failing the whole bench run
        results["postgresql"] = {"error": f"{type(exc).__name__}: {exc}"}
        print("postgresql unavailable:", exc)
    results["goal"] = {"postgresql_bulk_rows_per_s": 100_000}
    results["note"] = (
        "insert_ignore in batches of 50,000 rows, one transaction per measurement, commit included. "
        "bulk_rows_per_s: new document rows (two texts, a 256-byte MinHash blob, JSONB, 3 secondary indexes + the "
        "unique (domain, content_hash), 2 foreign keys); narrow_rows_per_s: new occurrence rows (7 columns, "
        "1 index + unique, 2 foreign keys); as the bench's superuser, foreign keys are checked set-wise (one lock per "
        "distinct parent: see store.engine._pg_bulk_fks); plain_role_*: the same loads as a role without the right to "
        "set session_replication_role (per-row foreign-key triggers); server_only_copy_rows_per_s: the document rows, "
        "already in binary COPY format, into a table with the same indexes and no foreign keys: what the server alone "
        "takes; conflict_rows_per_s: the same documents again, all skipped; "
        "late_conflict_rows_per_s: new documents with one stored row near the end of each batch; "
        "core_executemany_*: SQLAlchemy Core conn.execute(<dialect>.insert(t).on_conflict_do_nothing(), rows) on "
        "the same number of new rows, same batches, measured first (empty tables); orm_add_all: Session.add_all + "
        "commit on orm_add_all_rows new documents"
    )
    write_result("store", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
