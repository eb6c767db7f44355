"""The bulk path `store.engine.insert_ignore` with batches big enough for PostgreSQL's COPY (>= 2000 rows).

On PostgreSQL a batch goes by COPY straight into the table when no row collides, and through a temporary table and
INSERT ... ON CONFLICT DO NOTHING when one does; these tests pin what both must give: collisions skipped (never an
error, never a duplicate), the count of rows really inserted, JSON stored as JSON, client-side defaults, the caller's
transaction left usable. Each test runs on SQLite and PostgreSQL (`db_url`).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, text

from store.engine import Store, insert_ignore, open_store
from store.models import Document, Occurrence, Source

N = 3000


def _source(store: Store, name: str = "bulk") -> int:
    with store.connect() as conn:
        insert_ignore(conn, Source.__table__, [{"name": name, "domain": "d", "path": None}], conflict=["name"])
        return int(conn.execute(select(Source.id).where(Source.name == name)).scalar_one())


def _docs(source_id: int, keys: range | list[int], domain: str = "d") -> list[dict[str, Any]]:
    return [{"domain": domain, "source_id": source_id, "row_number": k, "external_id": f"e{k}", "group_key": None,
             "raw_text": f"text {k}", "text": f"text {k}", "content_hash": f"{k:040d}",
             "meta": {"k": k, "tags": ["a", "ü"], "nested": {"x": [1, 2.5, None, True]}},
             "minhash": bytes([k % 256]) * 256} for k in keys]


def _count(store: Store, domain: str = "d") -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Document).where(Document.domain == domain))
                   .scalar_one())


def _insert(store: Store, rows: list[dict[str, Any]]) -> int:
    with store.connect() as conn:
        return insert_ignore(conn, Document.__table__, rows, conflict=["domain", "content_hash"])


@pytest.fixture
def bulk_store(db_url: str):  # type: ignore[no-untyped-def]
    s = open_store(db_url)
    yield s
    s.close()


def test_collisions_skipped_and_counted(bulk_store: Store) -> None:
    sid = _source(bulk_store)
    assert _insert(bulk_store, _docs(sid, range(N))) == N
    assert _insert(bulk_store, _docs(sid, range(N))) == 0  # a re-run: every row collides
    # Half old, half new, interleaved.
    assert _insert(bulk_store, _docs(sid, range(N // 2, N + N // 2))) == N // 2
    # New rows with a single stored one late in the batch (one a sample of the keys will not hit): the COPY meets
    # the collision only at its end, and the batch still stores exactly the new rows.
    late = list(range(10 * N, 11 * N))
    late[-2] = 7
    assert _insert(bulk_store, _docs(sid, late)) == N - 1
    # Twice the same key inside one batch: stored once.
    twice = list(range(20 * N, 21 * N))
    twice[100] = twice[2500]
    assert _insert(bulk_store, _docs(sid, twice)) == N - 1
    total = N + N // 2 + (N - 1) + (N - 1)
    assert _count(bulk_store) == total
    with bulk_store.connect() as conn:
        distinct = conn.execute(select(func.count(func.distinct(Document.content_hash)))).scalar_one()
        assert distinct == total


def test_collision_in_a_middle_part_keeps_row_order(bulk_store: Store) -> None:
    """Big batches are copied in parts; a part that collides goes through ON CONFLICT before the next part."""
    sid = _source(bulk_store)
    n = 25_000
    assert _insert(bulk_store, _docs(sid, [7])) == 1
    keys = list(range(100, 100 + n))
    keys[15_000] = 7
    assert _insert(bulk_store, _docs(sid, keys)) == n - 1
    with bulk_store.connect() as conn:
        order = [r for (r,) in conn.execute(select(Document.row_number).order_by(Document.id))]
    assert order == [7] + [k for k in keys if k != 7]  # ids follow the rows' order


def test_json_defaults_and_missing_keys_round_trip(bulk_store: Store) -> None:
    sid = _source(bulk_store)
    rows = _docs(sid, range(N))
    when = datetime(2024, 5, 17, 12, 30, tzinfo=UTC)
    meta0: dict[str, Any] = {"quote": 'a "b" \\ c\n', "emoji": "é😀"}
    if bulk_store.dialect == "postgresql":
        meta0["when"] = when  # COPY's JSON encoding stores what it cannot encode as its str() (default=str)
    rows[0]["meta"] = meta0
    rows[1]["meta"] = None  # SQL NULL, not JSON null
    rows[2]["meta"] = ["a", 1]
    rows[3]["meta"] = "plain string"  # a JSON string
    for r in rows:
        del r["external_id"]  # not given at all: NULL
        r.pop("n_tokens", None)  # client-side default 0
    del rows[5]["group_key"]  # missing in a later row only: NULL
    rows[6]["group_key"] = "g"
    assert _insert(bulk_store, rows) == N
    with bulk_store.connect() as conn:
        got = {r.row_number: r for r in conn.execute(
            select(Document.row_number, Document.meta, Document.minhash, Document.external_id, Document.group_key,
                   Document.n_tokens, Document.n_sentences, Document.created_at).where(Document.source_id == sid)
        )}
        if bulk_store.dialect == "postgresql":
            kinds = dict(conn.execute(text(
                "SELECT row_number, jsonb_typeof(meta) FROM documents WHERE row_number < 4 ORDER BY row_number"
            )).all())
            assert kinds == {0: "object", 1: None, 2: "array", 3: "string"}
    assert len(got) == N
    assert got[0].meta == {**meta0, **({"when": str(when)} if "when" in meta0 else {})}
    assert got[1].meta is None
    assert got[2].meta == ["a", 1]
    assert got[3].meta == "plain string"
    assert got[2999].meta == {"k": 2999, "tags": ["a", "ü"], "nested": {"x": [1, 2.5, None, True]}}
    assert got[42].minhash == bytes([42]) * 256
    assert all(r.external_id is None and r.n_tokens == 0 and r.n_sentences == 0 for r in got.values())
    assert got[5].group_key is None and got[6].group_key == "g"
    assert all(r.created_at is not None for r in got.values())  # the server default


def test_columns_store_what_rows_store(bulk_store: Store) -> None:
    """Rows given column by column (`Columns`, the ingest's form) store exactly what the same rows as dicts store,
    collisions included; columns of different lengths or unknown names are refused."""
    sa, sb = _source(bulk_store, "as_rows"), _source(bulk_store, "as_columns")
    rows_a = _docs(sa, range(500), domain="rows")
    rows_b = _docs(sb, range(500), domain="cols")
    for r in rows_b[:3]:
        r["meta"] = None
    for r in rows_a[:3]:
        r["meta"] = None
    columns = {k: [r[k] for r in rows_b] for k in rows_b[0]}
    assert _insert(bulk_store, rows_a) == 500
    with bulk_store.connect() as conn:
        assert insert_ignore(conn, Document.__table__, columns, conflict=["domain", "content_hash"]) == 500
        again = {k: v[:10] + [f"new{k_}" if k == "content_hash" else v[0] for k_ in range(5)]
                 for k, v in columns.items()}
        assert insert_ignore(conn, Document.__table__, again, conflict=["domain", "content_hash"]) == 5
        cols = (Document.row_number, Document.meta, Document.minhash, Document.external_id, Document.text,
                Document.n_tokens, Document.content_hash)
        got_a = conn.execute(select(*cols).where(Document.domain == "rows").order_by(Document.id)).all()
        got_b = conn.execute(select(*cols).where(Document.domain == "cols").order_by(Document.id)).all()
        with pytest.raises(ValueError, match="different lengths"):
            insert_ignore(conn, Document.__table__, {"domain": ["x"], "content_hash": []}, conflict=["id"])
        if bulk_store.dialect == "sqlite":
            with pytest.raises(ValueError, match="no column"):
                insert_ignore(conn, Document.__table__, {"domain": ["x"], "nope": [1]}, conflict=["id"])
    assert got_b[:500] == got_a and len(got_b) == 505


def test_constant_columns_store_what_bound_values_store(bulk_store: Store) -> None:
    """A column with one value in every row is written as a literal on SQLite: it must store what binding each
    value stores, for quotes, NULL and values Python calls equal but that differ in type (1, True, 1.0)."""
    sid = _source(bulk_store)
    for domain, ext, group in (("mixed", [1, True, 1.0], ["it's"] * 3), ("same", [7, 7, 7], [None] * 3)):
        rows = _docs(sid, range(3), domain=domain)
        columns = {k: [r[k] for r in rows] for k in rows[0]}
        columns["external_id"], columns["group_key"] = ext, group
        with bulk_store.connect() as conn:
            assert insert_ignore(conn, Document.__table__, columns, conflict=["domain", "content_hash"]) == 3
        # The same values bound one row at a time (a single row is never written as literals).
        for k in range(3):
            one = {key: [v[k]] for key, v in columns.items()}
            one["domain"], one["content_hash"] = [domain + "_1"], [f"{k:040d}"]
            with bulk_store.connect() as conn:
                assert insert_ignore(conn, Document.__table__, one, conflict=["domain", "content_hash"]) == 1
        with bulk_store.connect() as conn:
            got = [conn.execute(select(Document.external_id, Document.group_key, Document.source_id)
                                .where(Document.domain == d).order_by(Document.id)).all()
                   for d in (domain, domain + "_1")]
        assert got[0] == got[1]
        assert [g[1] for g in got[0]] == group


def test_values_binary_copy_cannot_take_go_as_before(bulk_store: Store) -> None:
    sid = _source(bulk_store)
    rows = _docs(sid, range(N))
    rows[-1]["external_id"] = 12345  # an int for a string column: stored as its text
    assert _insert(bulk_store, rows) == N
    with bulk_store.connect() as conn:
        assert conn.execute(select(Document.external_id).where(Document.row_number == N - 1)).scalar_one() == "12345"
    occ = [{"source_id": sid, "row_number": i, "document_id": 1, "is_duplicate": i % 2 == 0} for i in range(N)]
    with bulk_store.connect() as conn:
        first = conn.execute(select(func.min(Document.id))).scalar_one()
        for o in occ:
            o["document_id"] = first
        assert insert_ignore(conn, Occurrence.__table__, occ, conflict=["source_id", "row_number"]) == N
        assert insert_ignore(conn, Occurrence.__table__, occ, conflict=["source_id", "row_number"]) == 0
        dup = conn.execute(select(func.count()).select_from(Occurrence).where(Occurrence.is_duplicate)).scalar_one()
    assert dup == N // 2
    if bulk_store.dialect == "postgresql":
        bad = _docs(sid, range(N, 2 * N))
        bad[-1]["row_number"] = 2**40  # out of int4's range: an error, never a silently wrapped number
        with pytest.raises(Exception, match="out of range"):
            _insert(bulk_store, bad)
        assert _count(bulk_store) == N


def test_runs_inside_the_callers_transaction(bulk_store: Store) -> None:
    sid = _source(bulk_store)
    with bulk_store.connect() as conn:
        assert insert_ignore(conn, Document.__table__, _docs(sid, range(N)), conflict=["domain", "content_hash"]) == N
    with pytest.raises(RuntimeError), bulk_store.connect() as conn:
        late = list(range(N, 2 * N))
        late[-2] = 3  # collides: the batch falls back to ON CONFLICT inside this transaction
        assert insert_ignore(conn, Document.__table__, _docs(sid, late), conflict=["domain", "content_hash"]) == N - 1
        # the transaction is still usable after the fallback, and sees its own rows
        assert conn.execute(select(func.count()).select_from(Document)).scalar_one() == 2 * N - 1
        raise RuntimeError("caller fails: nothing of this transaction may stay")
    assert _count(bulk_store) == N


def test_concurrent_bulk_loads_store_each_row_once(bulk_store: Store) -> None:
    """A second transaction loading overlapping rows waits for the first and then skips what it stored."""
    sid = _source(bulk_store)
    counts: dict[str, int] = {}
    started = threading.Event()

    def second() -> None:
        if started.wait(timeout=60):
            counts["b"] = _insert(bulk_store, _docs(sid, range(N // 2, N + N // 2)))

    t = threading.Thread(target=second, daemon=True)
    t.start()
    try:
        with bulk_store.connect() as conn:
            counts["a"] = insert_ignore(conn, Document.__table__, _docs(sid, range(N)),
                                        conflict=["domain", "content_hash"])
            started.set()
            time.sleep(0.5)  # the second one now waits on these uncommitted rows (PostgreSQL) or the lock (SQLite)
    finally:
        started.set()
        t.join(timeout=60)
    assert counts == {"a": N, "b": N // 2}
    assert _count(bulk_store) == N + N // 2


@pytest.mark.integration
def test_autocommit_connection_postgresql(pg_database: str) -> None:
    """Autocommit has no transaction to take savepoints in (a PostgreSQL matter: SQLite's path takes none)."""
    from tests.conftest import _fresh_pg_schema

    bulk_store = open_store(_fresh_pg_schema(pg_database))
    sid = _source(bulk_store)
    with bulk_store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert insert_ignore(conn, Document.__table__, _docs(sid, range(N)), conflict=["domain", "content_hash"]) == N
        late = list(range(N, 2 * N))
        late[-2] = 3
        assert insert_ignore(conn, Document.__table__, _docs(sid, late), conflict=["domain", "content_hash"]) == N - 1
    assert _count(bulk_store) == 2 * N - 1
    bulk_store.close()


def _occurrences(source_id: int, document_id: int, n: int = N) -> list[dict[str, Any]]:
    return [{"source_id": source_id, "row_number": i, "document_id": document_id, "external_id": None,
             "group_key": None, "is_duplicate": False, "run_id": None} for i in range(n)]


def _first_doc(store: Store) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.min(Document.id))).scalar_one())


def test_foreign_keys_enforced_in_bulk(bulk_store: Store) -> None:
    """A row pointing at a parent that does not exist fails the batch, with the server's own error; nothing stays."""
    sid = _source(bulk_store)
    assert _insert(bulk_store, _docs(sid, range(N))) == N
    occ = _occurrences(sid, _first_doc(bulk_store))
    occ[-3]["document_id"] = 10**12  # no such document
    with pytest.raises(Exception, match=r"(?i)foreign key"), bulk_store.connect() as conn:
        insert_ignore(conn, Occurrence.__table__, occ, conflict=["source_id", "row_number"])
    occ[-3]["document_id"] = occ[0]["document_id"]
    occ[5]["source_id"] = 10**12  # no such source: another foreign key of the same rows
    with pytest.raises(Exception, match=r"(?i)foreign key"), bulk_store.connect() as conn:
        insert_ignore(conn, Occurrence.__table__, occ, conflict=["source_id", "row_number"])
    with bulk_store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Occurrence)).scalar_one() == 0


@pytest.fixture
def pg_bulk_store(pg_database: str):  # type: ignore[no-untyped-def]
    from tests.conftest import _fresh_pg_schema

    s = open_store(_fresh_pg_schema(pg_database))
    yield s
    s.close()


@pytest.fixture
def lock_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many parent keys each set-wise foreign-key check locked (a spy: the real check runs)."""
    import store.engine as engine

    calls: list[int] = []
    real = engine._pg_lock_parents

    def spy(cur: Any, parents: list[tuple[str, str, list[int]]]) -> bool:
        calls.append(sum(len(keys) for _, _, keys in parents))
        return real(cur, parents)

    monkeypatch.setattr(engine, "_pg_lock_parents", spy)
    return calls


@pytest.mark.integration
def test_pg_set_wise_foreign_key_check_locks_parents(pg_bulk_store: Store, lock_calls: list[int]) -> None:
    """With the right to set session_replication_role (here: a superuser), the COPY skips the per-row foreign-key
    triggers and locks each distinct parent once, FOR KEY SHARE, as the triggers would: a concurrent delete of a
    parent waits for this transaction."""
    import psycopg

    sid = _source(pg_bulk_store)
    assert _insert(pg_bulk_store, _docs(sid, range(N))) == N
    doc = _first_doc(pg_bulk_store)
    lock_calls.clear()
    raw_url = pg_bulk_store.engine.url.render_as_string(hide_password=False).replace("postgresql+psycopg", "postgresql")
    with pg_bulk_store.connect() as conn:
        assert insert_ignore(conn, Occurrence.__table__, _occurrences(sid, doc),
                             conflict=["source_id", "row_number"]) == N
        assert lock_calls and sum(lock_calls) == 2 * len(lock_calls)  # one source and one document per part
        assert conn.exec_driver_sql("SELECT current_setting('session_replication_role')").scalar_one() == "origin"
        with psycopg.connect(raw_url) as other:
            other.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("DELETE FROM documents WHERE id = %s", (doc,))
    with pg_bulk_store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Occurrence)).scalar_one() == N


@pytest.mark.integration
def test_pg_tables_with_own_triggers_keep_them(pg_bulk_store: Store, lock_calls: list[int]) -> None:
    """Replica mode would silence a user's trigger too: a table with one takes the plain path."""
    sid = _source(pg_bulk_store)
    with pg_bulk_store.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE doc_audit (n int NOT NULL)")
        conn.exec_driver_sql(
            "CREATE FUNCTION count_doc() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO doc_audit VALUES (1); RETURN NEW; END $$")
        conn.exec_driver_sql(
            "CREATE TRIGGER doc_audit AFTER INSERT ON documents FOR EACH ROW EXECUTE FUNCTION count_doc()")
    assert _insert(pg_bulk_store, _docs(sid, range(N))) == N
    assert lock_calls == []
    with pg_bulk_store.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM doc_audit").scalar_one() == N


@pytest.mark.integration
def test_pg_role_without_the_right_uses_the_triggers(pg_bulk_store: Store, lock_calls: list[int]) -> None:
    """A plain role takes the per-row triggers; granted SET on session_replication_role (PostgreSQL 15+) it takes the
    set-wise check; granted that but not the right to lock parent rows, it falls back to the triggers."""
    import uuid

    sid = _source(pg_bulk_store)
    assert _insert(pg_bulk_store, _docs(sid, range(N))) == N
    doc = _first_doc(pg_bulk_store)
    role = f"curate_bulk_{uuid.uuid4().hex[:8]}"
    with pg_bulk_store.connect() as conn:
        if conn.connection.driver_connection.info.server_version < 150000:  # type: ignore[union-attr]
            pytest.skip("GRANT SET ON PARAMETER needs PostgreSQL 15")
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        conn.exec_driver_sql(f'GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        conn.exec_driver_sql(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')

    def load(first_row: int, *, bad: bool = False) -> int:
        occ = _occurrences(sid, doc)
        for o in occ:
            o["row_number"] += first_row
        if bad:
            occ[7]["document_id"] = 10**12
        with pg_bulk_store.connect() as conn:
            conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
            return insert_ignore(conn, Occurrence.__table__, occ, conflict=["source_id", "row_number"])

    lock_calls.clear()
    try:
        assert load(0) == N
        assert lock_calls == []
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            load(N, bad=True)
        with pg_bulk_store.connect() as conn:
            conn.exec_driver_sql(f'GRANT SET ON PARAMETER session_replication_role TO "{role}"')
        assert load(N) == N  # may set the role, may not lock parents (no UPDATE right): triggers after all
        assert lock_calls and all(lock_calls)
        with pg_bulk_store.connect() as conn:
            conn.exec_driver_sql(f'GRANT UPDATE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        lock_calls.clear()
        assert load(2 * N) == N
        assert lock_calls
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            load(3 * N, bad=True)
        with pg_bulk_store.connect() as conn:
            assert conn.execute(select(func.count()).select_from(Occurrence)).scalar_one() == 3 * N
    finally:
        with pg_bulk_store.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'REVOKE SET ON PARAMETER session_replication_role FROM "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')


def _fk_on(conn: Any) -> int:
    return int(conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one())


def test_new_sqlite_stores_get_16k_pages_and_old_ones_keep_theirs(tmp_path: Any) -> None:
    """A new store is created with 16 KiB pages; a store made with SQLite's 4 KiB keeps them (SQLite cannot change
    them in WAL mode), and its bulk loads still checkpoint at ~400 MB, counted in its own pages."""
    import sqlite3

    from store import engine

    new = open_store(f"sqlite:///{tmp_path / 'new.db'}")
    with new.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == 16_384
    with new.connect(bulk=True) as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == engine._BULK_WAL_BYTES // 16_384
    old_path = tmp_path / "old.db"
    raw = sqlite3.connect(old_path)
    raw.execute("PRAGMA page_size=4096")
    raw.execute("CREATE TABLE t (x)")  # the file now has pages of 4 KiB
    raw.close()
    old = open_store(f"sqlite:///{old_path}")
    with old.connect(bulk=True) as conn:
        assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == 4096
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == engine._BULK_WAL_BYTES // 4096
    new.close()
    old.close()


def test_sqlite_bulk_connection_settings_hold_only_inside(sqlite_url: str, tmp_path: Any) -> None:
    """`connect(bulk=True)` turns SQLite's per-row foreign-key checks off, lets the WAL grow and the page cache
    take 128 MiB for its own transaction only: the pooled connection has the defaults again afterwards, also after
    an error, and an ingest through it leaves no row pointing nowhere (`PRAGMA foreign_key_check`)."""
    from curation.config import Config
    from pipelines.ingest import ingest_file

    store = open_store(sqlite_url)
    sid = _source(store)
    with store.connect(bulk=True) as conn:
        assert _fk_on(conn) == 0
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() > 1000
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() < -65536  # KiB: more than 64 MiB
        insert_ignore(conn, Document.__table__, _docs(sid, range(10)), conflict=["domain", "content_hash"])
    with pytest.raises(RuntimeError), store.connect(bulk=True) as conn:
        raise RuntimeError("boom")
    for _ in range(3):  # whichever pooled connection comes back
        with store.connect() as conn:
            assert _fk_on(conn) == 1
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -65536
    occ = _occurrences(sid, _first_doc(store))[:5]
    occ[2]["document_id"] = 10**12
    with pytest.raises(Exception, match=r"(?i)foreign key"), store.connect() as conn:
        insert_ignore(conn, Occurrence.__table__, occ, conflict=["source_id", "row_number"])

    src = tmp_path / "fk.csv"
    src.write_text("text,label\n" + "".join(f"row {i % 37} about my card,l{i % 3}\n" for i in range(300)))
    summary = ingest_file(store, src, domain="customer_service", config=Config(), text_column="text",
                          label_column="label")
    assert summary["stored"] == 37 and summary["duplicates"] == 263
    with store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        assert _fk_on(conn) == 1
    store.close()


def test_sqlite_raw_path_stores_what_core_stores(sqlite_url: str) -> None:
    """SQLite's raw insert path (constant defaults inlined as literals, booleans bound as they are) stores exactly
    what SQLAlchemy Core's insert stores, for awkward defaults and for booleans that are not bool."""
    from sqlalchemy import JSON, Boolean, Column, Float, Integer, MetaData, String, Table, insert

    md = MetaData()
    t = Table(
        "raw_path", md,
        Column("id", Integer, primary_key=True),
        Column("flag", Boolean),
        Column("note", String, default="it's a 'quote'"),
        Column("n", Integer, default=3),
        Column("x", Float, default=0.5),
        Column("on", Boolean, default=True),
        Column("none", String, default=None),
        Column("j", JSON),
    )
    store = open_store(sqlite_url)
    md.create_all(store.engine)
    batches = [
        [{"id": 1, "flag": True, "j": {"a": 1}}, {"id": 2, "flag": False, "j": None},
         {"id": 3, "flag": None, "j": [1]}],
        [{"id": 4, "flag": 1, "j": {}}, {"id": 5, "flag": 0, "j": {"b": "c"}}],  # not bool: the processor's way
    ]
    with store.connect() as conn:
        for rows in batches:
            assert insert_ignore(conn, t, rows, conflict=["id"]) == len(rows)
        got = conn.execute(text("SELECT * FROM raw_path ORDER BY id")).all()
        conn.execute(text("DELETE FROM raw_path"))
        for rows in batches:
            conn.execute(insert(t), rows)
        want = conn.execute(text("SELECT * FROM raw_path ORDER BY id")).all()
    # One known difference: None in a JSON column is SQL NULL here (as in the PostgreSQL paths), JSON 'null' in Core.
    assert got[1][7] is None and want[1][7] == "null"
    assert [r[:7] for r in got] == [r[:7] for r in want] and [r[7] for r in got if r[0] != 2] == [
        r[7] for r in want if r[0] != 2
    ]
    assert got[0][2] == "it's a 'quote'" and got[0][5] == 1 and got[0][6] is None


def test_sqlite_index_rows_walk_the_table_in_id_order(sqlite_url: str) -> None:
    """Seeding the near-duplicate index reads the domain's documents in id order, batch by batch, by walking the
    table: the plan must not sort the whole domain again for every batch (it did, through the domain index)."""
    import numpy as np

    from store import documents as ds

    store = open_store(sqlite_url)
    fin = ds.ensure_source(store, name="f", domain="financial", path=None)
    cs = ds.ensure_source(store, name="c", domain="customer_service", path=None)
    sig = np.arange(16, dtype=np.uint16).tobytes()
    rows = [{"domain": dom, "source_id": src, "raw_text": f"t{i}", "text": f"t{i}", "content_hash": f"h{i}",
             "n_tokens": 1, "n_sentences": 1, "minhash": sig}
            for i, (dom, src) in enumerate([("financial", fin), ("customer_service", cs)] * 5)]
    with store.connect() as conn:
        insert_ignore(conn, Document.__table__, rows, conflict=["domain", "content_hash"])
    with store.connect() as conn:
        plan = " ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + ds._INDEX_ROWS_SQLITE,
                                                             ("financial", 0, 2)))
    assert "INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan
    parts = list(ds.iter_index_rows(store, domain="financial", num_perm=8, batch=2))
    assert [p.ids.tolist() for p in parts] == [[1, 3], [5, 7], [9]]
    assert [h for p in parts for h in p.content_hashes] == ["h0", "h2", "h4", "h6", "h8"]
    store.close()
