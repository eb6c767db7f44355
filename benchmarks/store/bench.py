"""Store bulk-load benchmark: occurrence-like and document-like rows into SQLite and PostgreSQL.

Compares the store's bulk path (`store.engine.insert_ignore`: sqlite3 executemany / PostgreSQL COPY into a temp
table + INSERT ... ON CONFLICT DO NOTHING) with SQLAlchemy ORM `add_all` in the same run.

    .venv/bin/python -m benchmarks.store.bench [--rows 200000] [--pg URL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import write_result

PG_ADMIN = os.environ.get("CURATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _rows(n: int, source_id: int) -> list[dict]:
    docs = []
    for i in range(n):
        text = f"customer message number {i} about a card that has not arrived yet"
        docs.append({"domain": "customer_service", "source_id": source_id, "row_number": i + 1,
                     "external_id": str(i), "group_key": None, "raw_text": text, "text": text,
                     "content_hash": hashlib.sha1(text.encode()).hexdigest(), "n_tokens": 12, "n_sentences": 1,
                     "meta": {"channel": "chat"}, "minhash": bytes(256)})
    return docs


def _bench(url: str, n: int) -> dict:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from store.engine import insert_ignore, open_store
    from store.models import Document, Occurrence, Source

    store = open_store(url)
    with store.connect() as conn:
        insert_ignore(conn, Source.__table__, [{"name": "bench", "domain": "customer_service", "path": None}],
                      conflict=["name"])
        source_id = conn.execute(select(Source.id).where(Source.name == "bench")).scalar_one()
    docs = _rows(n, source_id)
    t0 = time.perf_counter()
    with store.connect() as conn:
        for i in range(0, n, 50_000):
            insert_ignore(conn, Document.__table__, docs[i:i + 50_000], conflict=["domain", "content_hash"])
    bulk = time.perf_counter() - t0
    t0 = time.perf_counter()
    with store.connect() as conn:  # the same rows again: every one a conflict, nothing stored
        for i in range(0, n, 50_000):
            again = insert_ignore(conn, Document.__table__, docs[i:i + 50_000], conflict=["domain", "content_hash"])
            assert again == 0
    conflict = time.perf_counter() - t0
    orm_n = min(n, 50_000)
    with store.connect() as conn:
        doc_id, src_id = conn.execute(select(func.min(Document.id), func.min(Source.id))).one()
    occ = [{"source_id": src_id, "row_number": i + 1, "document_id": doc_id, "external_id": str(i), "group_key": None,
            "is_duplicate": True, "run_id": None} for i in range(n)]
    t0 = time.perf_counter()
    with store.connect() as conn:
        for i in range(0, n, 50_000):
            insert_ignore(conn, Occurrence.__table__, occ[i:i + 50_000], conflict=["source_id", "row_number"])
    narrow = time.perf_counter() - t0
    orm_docs = _rows(orm_n, source_id)
    for d in orm_docs:
        d["domain"] = "financial"
    t0 = time.perf_counter()
    with Session(store.engine) as s, s.begin():
        s.add_all([Document(**d) for d in orm_docs])
    orm = time.perf_counter() - t0
    store.close()
    return {
        "rows": n,
        "bulk_rows_per_s": round(n / bulk),
        "narrow_rows_per_s": round(n / narrow),
        "conflict_rows_per_s": round(n / conflict),
        "orm_add_all_rows": orm_n,
        "orm_add_all_rows_per_s": round(orm_n / orm),
        "speedup_vs_orm": round((n / bulk) / (orm_n / orm), 1),
    }


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
    results["note"] = ("bulk_rows_per_s: document rows (two texts, a 256-byte MinHash blob, JSONB, 3 indexes); "
                       "narrow_rows_per_s: occurrence rows (7 columns, 2 indexes)")
    write_result("store", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
