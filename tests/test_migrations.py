"""Migrations: the migrated schema matches the models; a populated store upgrades from the first revision."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from typer.testing import CliRunner

from curation.cli import app
from pipelines.ingest import ingest_files
from store.documents import annotations_frame, store_status
from store.engine import current_revision, downgrade, head_revision, open_store, upgrade
from store.models import Base
from tests.conftest import REPO


def test_migrated_schema_matches_models(db_url: str) -> None:
    store = open_store(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert current_revision(store.engine) == head_revision()


def test_populated_store_upgrades_from_first_revision(db_url: str) -> None:
    store = open_store(db_url, migrate=False)
    upgrade(store.engine, "0001")
    assert current_revision(store.engine) == "0001"
    # Populate at revision 0001 with plain SQL (the code of this version expects the newest schema).
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO sources (name, domain) VALUES ('old.csv', 'financial')"))
        conn.execute(text(
            "INSERT INTO documents (domain, source_id, raw_text, text, content_hash, n_tokens, n_sentences) "
            "VALUES ('financial', 1, 'Shares rose 5%', 'Shares rose 5%', 'h1', 3, 1)"
        ))
        conn.execute(text(
            "INSERT INTO annotations (document_id, annotator, label, origin, was_cancelled, version) "
            "VALUES (1, 'import:old.csv', 'positive', 'import', false, 1)"
        ))
    store.close()
    store = open_store(db_url)  # upgrades on first use
    assert current_revision(store.engine) == head_revision() != "0001"
    assert store_status(store)["documents"] == 1
    assert annotations_frame(store)["label"].tolist() == ["positive"]
    ingest_files(store, [REPO / "pipelines" / "sample_data" / "financial.jsonl"], domain="financial",
                 text_column="headline", label_column="sentiment")
    assert store_status(store)["documents"] > 100
    downgrade(store.engine, "0001")
    assert current_revision(store.engine) == "0001"
    upgrade(store.engine)
    assert current_revision(store.engine) == head_revision()


def test_db_commands(sqlite_url: str) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["db", "upgrade", "--db", sqlite_url])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["db", "current", "--db", sqlite_url, "--json"])
    assert res.exit_code == 0
    assert '"current": "' + head_revision() + '"' in res.stdout
    res = runner.invoke(app, ["db", "downgrade", "0001", "--db", sqlite_url])
    assert res.exit_code == 0, res.output
    assert "0001" in res.output
