"""Opening the store: engine, migrations applied on first use, sessions, and the bulk-write path.

Why here: every other package gets a `Store` and calls functions in `store.*`; none imports SQLAlchemy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Connection, Engine, Table, create_engine, event, insert, text
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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling off: SQLAlchemy's "begin" event below emits BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
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
    def connect(self) -> Iterator[Connection]:
        """A Core connection in one transaction."""
        with self.engine.begin() as conn:
            yield conn

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


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]) -> int:
    """Bulk insert, skipping rows that collide on `conflict` columns.

    Why: re-runs and concurrent runs must store each row exactly once; the database's unique constraints decide.
    SQLite takes the driver's own executemany (about 3x Core's speed: no per-row compilation); other dialects
    go through Core executemany. Returns the number of rows actually inserted where the driver reports it.
    """
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


def _columns_and_defaults(table: Table, rows: Sequence[dict[str, Any]]) -> tuple[list[Any], dict[str, Any]]:
    """The columns the rows give, and the client-side scalar defaults of the others (raw paths skip SQLAlchemy's)."""
    given = set(rows[0])
    cols = [c for c in table.columns if c.name in given]
    defaults = {
        c.name: c.default.arg  # type: ignore[union-attr]
        for c in table.columns
        if c.name not in given and c.default is not None and getattr(c.default, "is_scalar", False)
    }
    return cols, defaults


def _sqlite_insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]
) -> int:
    """The raw-driver path: each column's own bind processor (JSON, DateTime, ...) and scalar defaults applied."""
    dialect = conn.dialect
    cols, defaults = _columns_and_defaults(table, rows)
    names = [c.name for c in cols] + list(defaults)
    procs = [c.type._cached_bind_processor(dialect) for c in cols]  # noqa: SLF001
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) "
        f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
    )
    columns: list[list[Any]] = []
    for c, proc in zip(cols, procs, strict=True):
        values = [r.get(c.name) for r in rows]
        if proc is not None:
            values = [None if v is None else proc(v) for v in values]
        columns.append(values)
    columns.extend([v] * len(rows) for v in defaults.values())
    params = list(zip(*columns, strict=True))
    raw = conn.connection.driver_connection
    before = raw.total_changes  # type: ignore[union-attr]
    conn.exec_driver_sql(sql, params)  # type: ignore[arg-type]
    return int(raw.total_changes - before)  # type: ignore[union-attr]


def _pg_copy_insert_ignore(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, conflict: Sequence[str]
) -> int:
    """PostgreSQL's fastest path: COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING."""
    cols, defaults = _columns_and_defaults(table, rows)
    names = [c.name for c in cols] + list(defaults)
    json_cols = {c.name for c in cols if isinstance(c.type, JSON)}
    tmp = f"_copy_{table.name}"
    col_list = ", ".join(names)
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE {table.name} INCLUDING DEFAULTS)")
        cur.execute(f"TRUNCATE {tmp}")
        tail = tuple(defaults.values())
        with cur.copy(f"COPY {tmp} ({col_list}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(tuple(
                    json.dumps(r[c.name], ensure_ascii=False, default=str)
                    if c.name in json_cols and r.get(c.name) is not None else r.get(c.name)
                    for c in cols
                ) + tail)
        cur.execute(
            f"INSERT INTO {table.name} ({col_list}) SELECT {col_list} FROM {tmp} "
            f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
        )
        inserted = cur.rowcount
        cur.execute(f"TRUNCATE {tmp}")
    return int(inserted)


def default_sqlite_url(base: Path | None = None) -> str:
    base = base or Path(os.getcwd())
    return f"sqlite:///{(base / '.curate' / 'curate.db').resolve()}"
