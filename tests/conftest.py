"""Shared fixtures: a fresh store on SQLite and on a real PostgreSQL, the shared datasets, CLI runner."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("CURATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

pytest_plugins: list[str] = ["tests.fixtures_labelstudio", "tests.fixtures_active", "tests.fixtures_audit"]


def shared_data(*parts: str) -> Path:
    """A file of ../shared/data; tests that need it skip only where the folder is absent (CI has it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing in CI: ../shared/data must be present")
        pytest.skip(f"{path} not present")
    return path


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    if not _pg_available():
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: CI must provide it")
        pytest.skip("PostgreSQL not reachable")
    import psycopg

    name = f"curate_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_pg_schema(url: str) -> str:
    """Each test gets an empty schema inside the session database (cheaper than a database per test)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL on each backend (the store and pipeline tests run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'curate.db'}"
    return _fresh_pg_schema(request.getfixturevalue("pg_database"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'curate.db'}"


@pytest.fixture
def store(db_url: str):  # type: ignore[no-untyped-def]
    from store.engine import open_store

    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's config, store or Label Studio settings by accident."""
    for var in ("CURATE_DATABASE_URL", "CURATE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
