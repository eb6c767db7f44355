"""Opening the store: engine, migrations applied on first use, sessions, and the bulk-write path.

Why here: every other package gets a `Store` and calls functions in `store.*`; none imports SQLAlchemy.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Engine,
    FromClause,
    LargeBinary,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from curation.errors import StoreError

__all__ = [
    "Store",
    "open_store",
    "upgrade",
    "downgrade",
    "current_revision",
    "head_revision",
    "redact_url",
    "insert_ignore",
]

MIGRATIONS = Path(__file__).parent / "migrations"
_COPY_MIN_ROWS = 2000
_PG_MIGRATION_LOCK = 7_201_001


def redact_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _alembic_config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations; on PostgreSQL under an advisory lock so concurrent first uses don't race."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        command.upgrade(_alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        command.downgrade(_alembic_config(conn), revision)


_WAL_KEEP_BYTES = 64 * 2**20
_WAL_DEFAULT_PAGES = 1000  # SQLite's default wal_autocheckpoint
_BULK_WAL_BYTES = 400 * 10**6  # checkpoint a bulk load's WAL past ~400 MB (in pages of the database's size)
# Pages of 16 KiB for a new SQLite store (SQLite's default is 4 KiB; an existing store keeps its own). Why: a
# document row (raw and clean text, signature, hash) is a few hundred bytes, and a commit writes every changed page
# to the WAL with one write call each; with 4x larger pages the 1M-row benchmark's ingest ran 7% faster as a whole
# command (49.2 -> 46.0 s; 8 KiB: 47.3 s, 64 KiB: 45.4 s), its commits a fifth faster.
_PAGE_SIZE = 16_384
_CACHE_KIB = 65_536
_BULK_CACHE_KIB = 131_072


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling off: SQLAlchemy's "begin" event below emits BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # Before journal_mode: only a database without pages takes it (then WAL fixes it); others ignore it.
    cur.execute(f"PRAGMA page_size={_PAGE_SIZE}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    # 64 MiB of page cache instead of 2: bulk inserts into the random-order content-hash index stop re-reading pages.
    cur.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
    # A bulk load lets the WAL grow (see Store.connect); afterwards it is cut back to this size at the next checkpoint.
    cur.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Take SQLite's write lock at the start of each transaction (waiting up to busy_timeout).

    Why: in WAL mode a transaction that reads and then writes fails at once with SQLITE_BUSY when another
    process wrote in between; taking the lock up front makes concurrent runs wait their turn instead.
    """
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@dataclass
class Store:
    """An opened, migrated store."""

    url: str
    engine: Engine
    _sessions: sessionmaker[Session] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error (the store is never half-written)."""
        with self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def connect(self, *, bulk: bool = False) -> Iterator[Connection]:
        """A Core connection in one transaction.

        `bulk` (SQLite; other dialects ignore it, PostgreSQL's bulk path has its own): a large load whose caller
        guarantees that every foreign key it writes points at a row that exists and stays. The ingest does: sources
        and runs are committed before, documents and occurrences are written or read in this same transaction,
        under SQLite's database-wide write lock. So SQLite skips checking each key (about a tenth of the insert
        time), and checkpoints the WAL into the database file only when it exceeds ~400 MB instead of 1000 pages: index
        pages that every chunk touches are then copied once per few hundred MB, not at every commit (a quarter of
        the commit time on the 1M-row benchmark), and keeps 128 MiB of pages in its cache instead of 64 (a transaction
        of several chunks spills fewer pages before its commit). The settings are per connection and foreign_keys
        cannot change inside a transaction, so they are set before BEGIN and restored after the end; a connection
        on which that fails is discarded, never returned to the pool as it is.
        """
        if not (bulk and self.dialect == "sqlite"):
            with self.engine.begin() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            if raw is None:  # pragma: no cover - a fresh checkout always has one
                raise StoreError("The SQLite connection was closed before it could be used.")
            raw.execute("PRAGMA foreign_keys=OFF")
            page_size = raw.execute("PRAGMA page_size").fetchone()[0]
            raw.execute(f"PRAGMA wal_autocheckpoint={_BULK_WAL_BYTES // page_size}")
            raw.execute(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
            try:
                with conn.begin():
                    yield conn
            finally:
                try:
                    raw.execute("PRAGMA foreign_keys=ON")
                    raw.execute(f"PRAGMA wal_autocheckpoint={_WAL_DEFAULT_PAGES}")
                    raw.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
                except Exception:
                    conn.invalidate()
                    raise

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (creating if needed) the store at `url` and bring its schema to the newest revision."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"Store URL {url!r} is not a database URL.",
            hint="use e.g. sqlite:///path/to/curate.db or postgresql+psycopg://user@host/db",
        ) from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 60}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() in ("psycopg2", "pg8000", "asyncpg") or parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
            url = parsed.render_as_string(hide_password=False)
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(url, **kwargs)
    except Exception as exc:  # missing driver and the like
        raise StoreError(f"Cannot create an engine for {redact_url(url)}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    store = Store(url=url, engine=engine)
    if migrate:
        try:
            if current_revision(engine) != head_revision():
                upgrade(engine)
        except OperationalError as exc:
            raise StoreError(
                f"Cannot open the store at {redact_url(url)}: {exc.orig}",
                hint="check that the database server runs and the URL (--db / CURATE_DATABASE_URL) is right",
            ) from exc
    return store


Columns = dict[str, list[Any]]
"""Rows given column by column: each column name to its values, all lists of one length."""


def column_count(rows: Sequence[dict[str, Any]] | Columns) -> int:
    """How many rows `rows` (dicts, or `Columns`) holds."""
    if isinstance(rows, dict):
        return len(next(iter(rows.values()))) if rows else 0
    return len(rows)


def column_names(rows: Sequence[dict[str, Any]] | Columns) -> set[str]:
    """The columns `rows` (dicts, or `Columns`) gives: the first row's keys, or the column names."""
    return set(rows) if isinstance(rows, dict) else set(rows[0]) if rows else set()


def column_values(rows: Sequence[dict[str, Any]] | Columns, name: str) -> list[Any]:
    """The values of column `name` in `rows` (dicts, or `Columns`)."""
    if isinstance(rows, dict):
        return rows[name]
    return [r[name] for r in rows]


def insert_ignore(
    conn: Connection,
    table: Table | FromClause,
    rows: Sequence[dict[str, Any]] | Columns,
    *,
    conflict: Sequence[str],
) -> int:
    """Bulk insert, skipping rows that collide on `conflict` columns.

    Why: re-runs and concurrent runs must store each row exactly once; the database's unique constraints decide.
    SQLite takes the driver's own executemany (about 3x Core's speed: no per-row compilation); other dialects
    go through Core executemany. Returns the number of rows actually inserted where the driver reports it.
    `rows` may also come as `Columns` (one list per column), which SQLite binds without building a dict per row.
    """
    if not isinstance(table, Table):  # a mapped class's __table__ is typed as FromClause
        raise TypeError(f"insert_ignore needs a Table, got {type(table).__name__}")
    if isinstance(rows, dict):
        n = column_count(rows)
        if any(len(v) != n for v in rows.values()):
            raise ValueError(f"Columns of different lengths for {table.name}: "
                             f"{ {k: len(v) for k, v in rows.items()} }")
        if not n:
            return 0
        if conn.dialect.name == "sqlite":
            return _sqlite_insert_columns(conn, table, rows, conflict=conflict)
        names = list(rows)
        rows = [dict(zip(names, vals, strict=True)) for vals in zip(*rows.values(), strict=True)]
    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        return _sqlite_insert_ignore(conn, table, rows, conflict=conflict)
    if conn.dialect.name == "postgresql" and len(rows) >= _COPY_MIN_ROWS:
        return _pg_copy_insert_ignore(conn, table, rows, conflict=conflict)
    if conn.dialect.name == "postgresql":
        # RETURNING through insertmanyvalues: batched multi-row INSERTs, and an exact count of new rows.
        pk = list(table.primary_key.columns)[0]
        stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(pk)
        return len(conn.execute(stmt, list(rows)).all())
    stmt2: Any = insert(table).prefix_with("OR IGNORE")
    result = conn.execute(stmt2, list(rows))
    return int(result.rowcount) if result.rowcount is not None and result.rowcount >= 0 else 0


def _columns_and_defaults(table: Table, given: set[str]) -> tuple[list[Any], dict[str, Any]]:
    """The columns given, and the client-side scalar defaults of the others (raw paths skip SQLAlchemy's)."""
    cols = [c for c in table.columns if c.name in given]
    defaults = {
        c.name: getattr(c.default, "arg", None)
        for c in table.columns
        if c.name not in given and c.default is not None and getattr(c.default, "is_scalar", False)
    }
    return cols, defaults


def _pick(rows: Sequence[dict[str, Any]], names: list[str]) -> list[tuple[Any, ...]]:
    """Each row's values for `names` as a tuple, a missing key giving None (NULL).

    Why: one `itemgetter` call per row builds the tuple in C, several times faster than a `.get` per value; rows
    that are not plain dicts (a subclass's `[]` may differ from `.get`) or lack a key take the `.get` path.
    """
    if not names:
        return [() for _ in rows]
    if all(type(r) is dict for r in rows):
        try:
            if len(names) == 1:
                return [(r[names[0]],) for r in rows]
            return list(map(itemgetter(*names), rows))
        except KeyError:
            pass
    return [tuple(r.get(n) for n in names) for r in rows]


def _sqlite_insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]
) -> int:
    """The raw-driver path: each column's own bind processor (JSON, DateTime, ...) and scalar defaults applied.

    Columns whose values the driver takes as they are (no processor; binary, which sqlite3 takes as bytes) are
    picked from each row by one `itemgetter` call; only the others go value by value.
    """
    cols, defaults = _columns_and_defaults(table, set(rows[0]))
    procs = [_value_processor(conn, c, (r.get(c.name) for r in rows)) for c in cols]
    plain = [c.name for c, p in zip(cols, procs, strict=True) if p is None]
    processed = [(c.name, p) for c, p in zip(cols, procs, strict=True) if p is not None]
    sql, bound = _sqlite_insert_sql(conn, table, plain + [n for n, _ in processed], defaults, conflict)
    params = _pick(rows, plain)
    rest: list[list[Any]] = [
        [None if v is None else proc(v) for v in (r.get(name) for r in rows)] for name, proc in processed
    ]
    rest.extend([v] * len(rows) for v in bound.values())
    if rest:
        params = [a + b for a, b in zip(params, zip(*rest, strict=True), strict=True)]
    return _sqlite_executemany(conn, sql, params)


def _sqlite_insert_sql(
    conn: Connection, table: Table, names: list[str], defaults: dict[str, Any], conflict: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """The INSERT for columns `names` then the columns of `defaults` (a value for every row: a column's default, or
    the one value a column has in every row); returns it and those values that are bound (the others, plain
    scalars, are literals in the statement: no value to add to each row)."""
    inline = {n: lit for n, v in defaults.items() if (lit := _sqlite_literal(v)) is not None}
    bound = {n: v for n, v in defaults.items() if n not in inline}
    every = names + list(bound) + list(inline)
    marks = ["?"] * (len(every) - len(inline)) + list(inline.values())
    q = conn.dialect.identifier_preparer.quote
    sql = (
        f"INSERT INTO {q(table.name)} ({', '.join(map(q, every))}) VALUES ({', '.join(marks)}) "
        f"ON CONFLICT ({', '.join(map(q, conflict))}) DO NOTHING"
    )
    return sql, bound


def _sqlite_executemany(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> int:
    raw = conn.connection.driver_connection
    before = raw.total_changes  # type: ignore[union-attr]
    conn.exec_driver_sql(sql, params)  # type: ignore[arg-type]
    return int(raw.total_changes - before)  # type: ignore[union-attr]


def _sqlite_insert_columns(conn: Connection, table: Table, columns: Columns, *, conflict: Sequence[str]) -> int:
    """`_sqlite_insert_ignore` for rows given column by column: each column's processor runs over its list (only
    where the values need it), and one zip makes the rows."""
    unknown = [n for n in columns if n not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {unknown}; it has {[c.name for c in table.columns]}")
    n = column_count(columns)
    _, defaults = _columns_and_defaults(table, set(columns))
    names: list[str] = []
    values: list[list[Any]] = []
    constants: dict[str, Any] = {}
    for name, vals in columns.items():
        proc = _value_processor(conn, table.c[name], vals)
        if proc is None and n > 1 and _constant(vals):
            # One value in every row (the source, the run, the annotator of imported labels): a literal in the
            # statement instead of a value bound to every row (a tenth of such an insert's time).
            constants[name] = vals[0]
            continue
        names.append(name)
        values.append(vals if proc is None else [None if v is None else proc(v) for v in vals])
    sql, bound = _sqlite_insert_sql(conn, table, names, {**constants, **defaults}, conflict)
    values.extend([v] * n for v in bound.values())
    return _sqlite_executemany(conn, sql, list(zip(*values, strict=True)) if values else [()] * n)


def _constant(vals: Sequence[Any]) -> bool:
    """Whether a column's values are one SQLite literal repeated (same value and type: 1, 1.0 and True are equal
    in Python but not the same literal)."""
    if not isinstance(vals, list):
        return False
    first = vals[0]
    if _sqlite_literal(first) is None or vals.count(first) != len(vals):
        return False
    kind = type(first)
    return kind is str or first is None or all(type(v) is kind for v in vals)


def _value_processor(conn: Connection, column: Any, values: Iterable[Any]) -> Callable[[Any], Any] | None:
    """What each value of `column` must go through before sqlite3 binds it, or None when it takes them as they are.

    None also where the type has a bind processor the values do not need: binary (sqlite3 takes bytes), and
    booleans that are all True, False or None (sqlite3 binds bool as the integer SQLAlchemy would). JSON with the
    default serializer gets the one C encoder (`_fast_json`).
    """
    dialect = conn.dialect
    proc: Callable[[Any], Any] | None = column.type._cached_bind_processor(dialect)  # noqa: SLF001
    if proc is None or isinstance(column.type, LargeBinary):
        return None
    if isinstance(column.type, Boolean) and all(type(v) is bool or v is None for v in values):
        return None
    if dialect._json_serializer is None and isinstance(column.type, JSON):  # type: ignore[attr-defined]
        return _fast_json(proc)
    return proc


def _sqlite_literal(value: Any) -> str | None:
    """`value` as an SQLite literal when it is a plain scalar (None, bool, int, finite float, str without NUL);
    otherwise None (bind it)."""
    if value is None:
        return "NULL"
    if type(value) is bool:
        return "1" if value else "0"
    if type(value) is int and -(2**63) <= value < 2**63:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    if type(value) is str and "\x00" not in value:
        return "'" + value.replace("'", "''") + "'"
    return None


def _fast_json(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A JSON column's bind processor, with dicts and lists serialized by one C encoder made once (the same text as
    the default json.dumps); other values (SQLAlchemy's JSON.NULL and null(), scalars) go through `process`."""

    def fast(value: Any) -> Any:
        if type(value) is dict or type(value) is list:
            return _JSON_DUMPS(value)
        return process(value)

    return fast


# Binary COPY sends each value through the dumper of its column's server type. Most of psycopg's binary dumpers
# refuse a Python value of another type (TypeError: the batch then goes as text COPY, which adapts by Python type
# exactly as before), but some convert where text COPY would store something else or fail: int2/int4 wrap out-of-range
# integers, bool takes any value's truthiness ("no" -> true), integer and float columns take True/False, float4 turns
# overflows into Infinity. So integer, float8 and bool columns are checked first, and other types always go as text.
_PG_AS_IS = frozenset({25, 1042, 1043, 17, 1114, 1184})  # text, bpchar, varchar, bytea, timestamp, timestamptz
_PG_INT_LIMIT = {21: 2**15, 23: 2**31, 20: 2**63}  # int2, int4, int8
_PG_FLOAT8, _PG_BOOL = 701, 16
_PG_JSON = frozenset({114, 3802})  # json, jsonb
_PG_SAMPLE = 32
_PG_COPY_PART = 10_000  # rows a late collision can make COPY redo (and one savepoint each)
def _json_encoder(*, ensure_ascii: bool = False) -> Callable[[Any], str]:
    """json.dumps(v, ensure_ascii=False, default=str), or with `ensure_ascii` plain json.dumps(v), without building
    an encoder per call.

    Why: `JSONEncoder.encode` makes a new C encoder on every call, most of its cost for small dicts; the C encoder is
    made once here (no circular-reference check: a circular value ends in RecursionError instead of ValueError).
    """
    plain = (json.JSONEncoder() if ensure_ascii else json.JSONEncoder(ensure_ascii=False, default=str)).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    strings = getattr(json.encoder, "c_encode_basestring_ascii" if ensure_ascii else "c_encode_basestring", None)
    if make is None or strings is None:
        return plain
    default = json.JSONEncoder().default if ensure_ascii else str
    c_encode = make(None, default, strings, None, ": ", ", ", False, False, True)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return plain(value)
        return "".join(c_encode(value, 0))

    return encode


_JSON_ENCODE = _json_encoder()
_JSON_DUMPS = _json_encoder(ensure_ascii=True)


def _pg_copy_insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]
) -> int:
    """PostgreSQL's bulk path: COPY straight into the table while no row collides, else COPY into a temporary table
    and INSERT ... SELECT ... ON CONFLICT DO NOTHING.

    Why: ON CONFLICT costs the server a speculative insertion per row, and the temporary table a second write and
    read, while a plain COPY uses PostgreSQL's batched multi-insert (about 1.5x less server time for documents).
    Bulk loads are nearly always new rows (ingest looks hashes and row numbers up first), so COPY goes first, in
    parts of _PG_COPY_PART rows, each under a savepoint. A row that collides (stored before, by a concurrent
    transaction, or twice in `rows`) makes its part's COPY fail with a unique violation; rolled back to the
    savepoint, that part goes through ON CONFLICT, so collisions are still skipped, never raise and never duplicate,
    and rows keep their order. A sample of the keys is looked up first, so a batch seen to collide (a re-run) skips
    the doomed COPYs. Returns the number of rows really inserted.
    """
    import psycopg

    cols, defaults = _columns_and_defaults(table, set(rows[0]))
    json_cols = [c.name for c in cols if isinstance(c.type, JSON)]
    plain = [c.name for c in cols if not isinstance(c.type, JSON)]
    names = plain + json_cols + list(defaults)  # JSON columns after the others: see _pg_row_tuples
    prep = conn.dialect.identifier_preparer
    target = prep.format_table(table)
    col_list = ", ".join(prep.quote(n) for n in names)
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            "SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (target,),
        )
        type_of = dict(cur.fetchall())
        oids = [int(type_of.get(n, 0)) for n in names]  # 0 (not there): text COPY, which fails as before
        copy = _PgCopy(cur, _PgSavepoint(raw, cur), oids, plain, json_cols, tuple(defaults.values()))
        copy.binary = _pg_binary_ok(oids, names, set(json_cols), rows, defaults)
        direct = _pg_has_unique(table, conflict)
        direct = direct and not _pg_sample_collides(copy, rows, target, prep, conflict, defaults)
        # One temporary table per column set (and types) and connection: those columns only, no constraints or
        # defaults (NOT NULL and the id sequence are the real INSERT's business).
        tmp = prep.quote(f"_copy_{table.name}_{zlib.crc32(repr((col_list, oids)).encode()):08x}")
        on_conflict = (
            f"INSERT INTO {target} ({col_list}) SELECT {col_list} FROM {tmp} "
            f"ON CONFLICT ({', '.join(prep.quote(c) for c in conflict)}) DO NOTHING"
        )
        step = _PG_COPY_PART if direct else len(rows)
        fks = _pg_bulk_fks(raw, cur, target, names) if direct else None
        inserted = 0
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            if direct:
                parents = _pg_parent_keys(part, fks, defaults) if fks is not None else None
                copy.savepoint.begin()
                try:
                    if parents is not None:
                        cur.execute("SELECT set_config('session_replication_role', 'replica', true)")
                    copied = copy(f"COPY {target} ({col_list}) FROM STDIN", part)
                    if parents is not None:
                        cur.execute("SELECT set_config('session_replication_role', 'origin', true)")
                        if not _pg_lock_parents(cur, parents):
                            raise _MissingParent
                    copy.savepoint.release()
                    inserted += copied
                    continue
                except (psycopg.errors.UniqueViolation, _MissingParent):
                    copy.savepoint.rollback()
                    copy.savepoint.release()
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} AS SELECT {col_list} FROM {target} WITH NO DATA")
            cur.execute(f"TRUNCATE {tmp}")
            if copy.binary:  # for the fall-back to text, should a value not fit
                copy.savepoint.begin()
            copy(f"COPY {tmp} ({col_list}) FROM STDIN", part)
            copy.savepoint.release()
            cur.execute(on_conflict)
            inserted += cur.rowcount
            cur.execute(f"TRUNCATE {tmp}")
    return inserted


class _MissingParent(Exception):
    """A bulk-checked foreign key found no parent row: the part is redone with the server's own checks, which raise
    the real ForeignKeyViolation."""


# (column, parent table, parent column) of each foreign key of a table.
_ForeignKeys = list[tuple[str, str, str]]


def _pg_bulk_fks(raw: Any, cur: Any, target: str, names: list[str]) -> _ForeignKeys | None:
    """The table's foreign keys, when this COPY may check them set-wise instead of by the server's per-row triggers.

    Why: PostgreSQL checks a foreign key with one trigger call per row (an index probe and a row lock each); for
    narrow rows that is three quarters of a COPY's cost. With `session_replication_role = replica` for the COPY only,
    no trigger fires, and `_pg_lock_parents` then does what the triggers would have done, once per distinct key:
    lock each parent row `FOR KEY SHARE` and check that it exists, before the savepoint is released. Same guarantee
    (a concurrent delete of a parent waits for this transaction, or commits first and makes the check fail).

    None (the plain path, triggers and all) unless every condition holds: inside a transaction; the role may set
    `session_replication_role` (superuser, or `GRANT SET ON PARAMETER session_replication_role` on PostgreSQL 15+);
    no trigger of the table's own (replica mode would skip it too); every foreign key is a single, non-deferrable
    column that the COPY writes or leaves NULL.
    """
    if raw.autocommit:
        return None
    cur.execute("SELECT current_setting('is_superuser') = 'on', current_setting('session_replication_role')")
    superuser, role = cur.fetchone()
    if role != "origin":
        return None
    if not superuser:
        if raw.info.server_version < 150000:
            return None
        cur.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
        if not cur.fetchone()[0]:
            return None
    cur.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (target,))
    if cur.fetchone()[0]:
        return None
    cur.execute(
        "SELECT a.attname, quote_ident(pn.nspname) || '.' || quote_ident(pc.relname), quote_ident(pa.attname), "
        "cardinality(c.conkey) = 1 AND NOT c.condeferrable, a.atthasdef "
        "FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
        "JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace "
        "JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attnum = c.confkey[1] "
        "WHERE c.conrelid = %s::regclass AND c.contype = 'f'",
        (target,),
    )
    fks: _ForeignKeys = []
    for column, parent, parent_column, simple, has_default in cur.fetchall():
        if not simple or (column not in names and has_default):
            return None
        if column in names:  # a column the COPY leaves out is NULL in every row: nothing to check
            fks.append((column, parent, parent_column))
    return fks


def _pg_parent_keys(rows: Sequence[dict[str, Any]], fks: _ForeignKeys,
                    defaults: dict[str, Any]) -> list[tuple[str, str, list[int]]] | None:
    """Per foreign key, the distinct non-NULL parent keys the rows refer to; None when one is not a plain int
    (the server would cast it; the set-wise check does not guess how)."""
    out = []
    for column, parent, parent_column in fks:
        values = {defaults[column]} if column in defaults else set(_pg_column(rows, column))
        values.discard(None)
        if not all(type(v) is int for v in values):
            return None
        out.append((parent, parent_column, list(values)))
    return out


def _pg_lock_parents(cur: Any, parents: list[tuple[str, str, list[int]]]) -> bool:
    """Lock the parent rows `FOR KEY SHARE`, as the foreign-key triggers do; False when one does not exist (or the
    role may not lock it: the triggers run as the parent's owner)."""
    import psycopg

    for parent, parent_column, keys in parents:
        if not keys:
            continue
        try:
            cur.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM ONLY {parent} x WHERE x.{parent_column} = ANY(%s::int8[]) "
                "FOR KEY SHARE OF x) AS locked",
                (keys,),
            )
        except psycopg.errors.InsufficientPrivilege:
            return False
        if cur.fetchone()[0] != len(keys):
            return False
    return True


def _pg_has_unique(table: Table, conflict: Sequence[str]) -> bool:
    """Whether a primary key, unique constraint or unique index covers exactly the `conflict` columns.

    Without one, ON CONFLICT raises and a plain COPY would not: the direct COPY is only for tables where both
    behave the same.
    """
    want = set(conflict)
    keys = [list(table.primary_key.columns)]
    keys += [list(c.columns) for c in table.constraints if isinstance(c, UniqueConstraint)]
    keys += [list(i.columns) for i in table.indexes if i.unique]
    return any({c.name for c in k} == want for k in keys)


class _PgSavepoint:
    """A savepoint in the caller's transaction. Under autocommit there is none to take: each statement is its own
    transaction, so a failed COPY undoes only itself."""

    def __init__(self, raw: Any, cur: Any) -> None:
        self.cur, self.autocommit, self.open = cur, bool(raw.autocommit), False

    def begin(self) -> None:
        if not self.autocommit:
            self.cur.execute("SAVEPOINT _curate_bulk")
            self.open = True

    def rollback(self) -> None:
        """Undo what ran since begin(), a failed statement included; the savepoint stays."""
        if self.open:
            self.cur.execute("ROLLBACK TO SAVEPOINT _curate_bulk")

    def release(self) -> None:
        if self.open:
            self.cur.execute("RELEASE SAVEPOINT _curate_bulk")
            self.open = False


class _PgCopy:
    """COPY of the rows into a table: binary when `binary`, else (or when a value turns out not to fit) text."""

    def __init__(self, cur: Any, savepoint: _PgSavepoint, oids: list[int], plain: list[str], json_cols: list[str],
                 tail: tuple[Any, ...]) -> None:
        self.cur, self.savepoint, self.oids = cur, savepoint, oids
        self.plain, self.json_cols, self.tail = plain, json_cols, tail
        self.binary = False

    def __call__(self, sql: str, rows: Sequence[dict[str, Any]]) -> int:
        """COPY (`sql` without its options); the savepoint must be open when binary. Returns the rows copied."""
        if self.binary:
            try:
                return self._copy(sql + " (FORMAT BINARY)", rows, binary=True)
            except (TypeError, ValueError, OverflowError):  # a value the binary dumper refuses: all as text instead
                self.savepoint.rollback()
                self.binary = False
        return self._copy(sql, rows, binary=False)

    def _copy(self, sql: str, rows: Sequence[dict[str, Any]], *, binary: bool) -> int:
        from psycopg.types.json import set_json_dumps

        if binary:
            set_json_dumps(_as_encoded, self.cur)  # this cursor's json/jsonb dumpers take the text already encoded
        with self.cur.copy(sql) as copy:
            if binary:
                copy.set_types(self.oids)
            write = copy.write_row
            for row in _pg_row_tuples(rows, self.plain, self.json_cols, self.tail):
                write(row)
        return int(self.cur.rowcount)


def _as_encoded(text: str) -> str:
    return text


def _pg_row_tuples(rows: Sequence[dict[str, Any]], plain: list[str], json_cols: list[str],
                   tail: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Each row as a tuple in COPY's column order: `plain`, `json_cols` (NULL for None, else JSON text), then `tail`;
    a missing key is NULL.

    Why this shape: `_pick` builds the plain part in C, JSON columns are encoded column by column, and the parts are
    joined by `tuple.__add__` in C.
    """
    out = _pick(rows, plain)
    encode = _JSON_ENCODE
    for k in json_cols:
        values = [None if v is None else encode(v) for v in _pg_column(rows, k)]
        out = list(map(add, out, zip(values)))
    if tail:
        out = list(map(add, out, repeat(tail)))
    return out


def _pg_binary_ok(oids: list[int], names: list[str], json_cols: set[str], rows: Sequence[dict[str, Any]],
                  defaults: dict[str, Any]) -> bool:
    """Whether binary COPY stores exactly what text COPY would for these values (see _PG_AS_IS)."""
    for name, oid in zip(names, oids, strict=True):
        if oid in _PG_JSON or name in json_cols:
            if not (oid in _PG_JSON and name in json_cols):
                return False
            continue
        if oid in _PG_AS_IS:
            continue
        if oid not in _PG_INT_LIMIT and oid not in (_PG_FLOAT8, _PG_BOOL):
            return False
        values: list[Any] = [defaults[name]] if name in defaults else _pg_column(rows, name)
        kinds = set(map(type, values))
        if type(None) in kinds:
            kinds.discard(type(None))
            values = [v for v in values if v is not None]
        if oid == _PG_BOOL:
            ok = kinds <= {bool}
        elif oid == _PG_FLOAT8:
            ok = kinds <= {float, int}
        else:
            limit = _PG_INT_LIMIT[oid]
            ok = kinds <= {int} and (not values or (-limit <= min(values) and max(values) < limit))
        if not ok:
            return False
    return True


def _pg_column(rows: Sequence[dict[str, Any]], name: str) -> list[Any]:
    try:
        return list(map(dict.get, rows, repeat(name)))  # type: ignore[arg-type]
    except TypeError:  # rows that are mappings but not dicts
        return [r.get(name) for r in rows]


def _pg_sample_collides(copy: _PgCopy, rows: Sequence[dict[str, Any]], target: str, prep: Any,
                        conflict: Sequence[str], defaults: dict[str, Any]) -> bool:
    """Whether one of ~32 evenly spread rows (the first and last among them) is already stored.

    Only a guess that spares COPYs bound to fail: a collision it misses still ends in the ON CONFLICT path. Keys with
    a NULL never collide (as with ON CONFLICT). A key the lookup cannot compare counts as colliding, so that the
    ON CONFLICT path reports the error as before.
    """
    import psycopg

    step = max(1, len(rows) // _PG_SAMPLE)
    picks = [rows[i] for i in [*range(0, len(rows), step), len(rows) - 1]]
    keys: list[tuple[Any, ...]] = []
    for r in picks:
        key = tuple(r[c] if c in r else defaults.get(c) for c in conflict)
        if None not in key and key not in keys:
            keys.append(key)
    if not keys:
        return False
    # One index lookup per key (LATERAL ... LIMIT 1), whatever the planner thinks of a long OR.
    values = ", ".join(["(" + ", ".join(["%s"] * len(conflict)) + ")"] * len(keys))
    match = " AND ".join(f"t.{prep.quote(c)} = k.c{i}" for i, c in enumerate(conflict))
    copy.savepoint.begin()
    try:
        copy.cur.execute(
            f"SELECT 1 FROM (VALUES {values}) AS k({', '.join(f'c{i}' for i in range(len(conflict)))}), "
            f"LATERAL (SELECT 1 FROM {target} AS t WHERE {match} LIMIT 1) AS hit LIMIT 1",
            [v for k in keys for v in k],
        )
        found = copy.cur.fetchone() is not None
    except psycopg.Error:
        copy.savepoint.rollback()
        found = True
    copy.savepoint.release()
    return found


def default_sqlite_url(base: Path | None = None) -> str:
    base = base or Path(os.getcwd())
    return f"sqlite:///{(base / '.curate' / 'curate.db').resolve()}"
