"""Typed SQLAlchemy 2.x models: the store's whole schema.

Why one schema for every stage: documents, imported labels and Label Studio annotations live side by side, so that
consensus, audits and exports read one place. Migrations in `store/migrations` create exactly these tables; a test
checks that the migrated schema matches these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "JSONType",
    "IdType",
    "Source",
    "Run",
    "Document",
    "Occurrence",
    "Quarantine",
    "Annotation",
    "AnnotationHistory",
    "LSProject",
    "Task",
    "SyncState",
    "Prediction",
    "Selection",
    "ModelVersion",
    "LabelIssue",
    "ExportVersion",
]

#: JSON everywhere, JSONB on PostgreSQL (indexable, compact).
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
#: 64-bit ids on PostgreSQL; SQLite needs INTEGER for its rowid alias.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


def _now() -> Any:
    return func.now()


class Source(Base):
    """A named input (a file, by default its file name) in one domain."""

    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    domain: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Run(Base):
    """One execution of a command (ingest, push, pull, sample, audit, export, nightly and its steps)."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float | None] = mapped_column(Float)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)


class Document(Base):
    """One distinct text per domain; exact duplicates become `Occurrence` rows pointing here."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("domain", "content_hash", name="uq_documents_domain_hash"),
        Index("ix_documents_domain_source", "domain", "source_id"),
        Index("ix_documents_cluster", "cluster_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    domain: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    row_number: Mapped[int | None] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(255))
    group_key: Mapped[str | None] = mapped_column(String(255))
    raw_text: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(40))
    cluster_id: Mapped[int | None] = mapped_column(BigInteger)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    n_sentences: Mapped[int] = mapped_column(Integer, default=0)
    pii: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Occurrence(Base):
    """Every stored input row: which document it became, and whether it was a duplicate of an earlier row."""

    __tablename__ = "occurrences"
    __table_args__ = (
        UniqueConstraint("source_id", "row_number", name="uq_occurrences_source_row"),
        Index("ix_occurrences_document", "document_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    row_number: Mapped[int] = mapped_column(Integer)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    external_id: Mapped[str | None] = mapped_column(String(255))
    group_key: Mapped[str | None] = mapped_column(String(255))
    is_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class Quarantine(Base):
    """An input row that could not become a document, with its raw payload and why."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("source_id", "row_number", name="uq_quarantine_source_row"),)
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    row_number: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(64), index=True)
    raw_payload: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Annotation(Base):
    """A label by one annotator: imported (`import:<source>`), from Label Studio, or from a review.

    Imported labels are keyed by their occurrence (one per input row); Label Studio ones by the server's annotation id.
    """

    __tablename__ = "annotations"
    __table_args__ = (
        UniqueConstraint("occurrence_id", name="uq_annotations_occurrence"),
        UniqueConstraint("ls_annotation_id", name="uq_annotations_ls_id"),
        Index("ix_annotations_document", "document_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    annotator: Mapped[str] = mapped_column(String(255))
    label: Mapped[str | None] = mapped_column(String(255))
    labels: Mapped[list[Any] | None] = mapped_column(JSONType)
    origin: Mapped[str] = mapped_column(String(32), default="import")
    occurrence_id: Mapped[int | None] = mapped_column(ForeignKey("occurrences.id"))
    ls_annotation_id: Mapped[int | None] = mapped_column(BigInteger)
    ls_task_id: Mapped[int | None] = mapped_column(BigInteger)
    project_id: Mapped[int | None] = mapped_column(BigInteger)
    lead_time: Mapped[float | None] = mapped_column(Float)
    was_cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[list[Any] | None] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class AnnotationHistory(Base):
    """Earlier versions of an annotation (an update or a review replaces the current one; nothing is lost)."""

    __tablename__ = "annotation_history"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    annotation_id: Mapped[int] = mapped_column(ForeignKey("annotations.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(255))
    labels: Mapped[list[Any] | None] = mapped_column(JSONType)
    result: Mapped[list[Any] | None] = mapped_column(JSONType)
    was_cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    reason: Mapped[str | None] = mapped_column(String(64))


class LSProject(Base):
    """A Label Studio project the store knows (by server URL and project id)."""

    __tablename__ = "ls_projects"
    __table_args__ = (UniqueConstraint("server_url", "project_id", name="uq_ls_projects_server_project"),)
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    server_url: Mapped[str] = mapped_column(String(512))
    project_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), default="labeling")
    labels: Mapped[list[Any] | None] = mapped_column(JSONType)
    label_config_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Task(Base):
    """A document sent to a Label Studio project (at most once per project)."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("project_ref", "document_id", name="uq_tasks_project_document"),
        Index("ix_tasks_ls_task", "project_ref", "ls_task_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project_ref: Mapped[int] = mapped_column(ForeignKey("ls_projects.id"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    ls_task_id: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[float | None] = mapped_column(Float)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    pushed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class SyncState(Base):
    """Watermarks and other small per-project state (e.g. the last pulled `updated_at`)."""

    __tablename__ = "sync_state"
    __table_args__ = (UniqueConstraint("project_ref", "key", name="uq_sync_state_project_key"),)
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project_ref: Mapped[int] = mapped_column(ForeignKey("ls_projects.id"))
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ModelVersion(Base):
    """A trained classifier: what it was trained on, how, and how well it did."""

    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(128), unique=True)
    domain: Mapped[str | None] = mapped_column(String(64))
    encoder: Mapped[str | None] = mapped_column(String(512))
    mode: Mapped[str | None] = mapped_column(String(32))
    labels: Mapped[list[Any] | None] = mapped_column(JSONType)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Prediction(Base):
    """A model's prediction for a document (used for Label Studio pre-annotations)."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("document_id", "model_version", name="uq_predictions_doc_model"),)
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    model_version: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(255))
    score: Mapped[float] = mapped_column(Float)
    probs: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Selection(Base):
    """A document picked by active learning: by which strategy, with what score, in which round."""

    __tablename__ = "selections"
    __table_args__ = (
        UniqueConstraint("run_id", "document_id", name="uq_selections_run_document"),
        Index("ix_selections_document", "document_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    domain: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(128))
    seed: Mapped[int | None] = mapped_column(Integer)
    round: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class LabelIssue(Base):
    """One audit's verdict on one labeled document (cleanlab), and the review's outcome."""

    __tablename__ = "label_issues"
    __table_args__ = (
        UniqueConstraint("run_id", "document_id", name="uq_label_issues_run_document"),
        Index("ix_label_issues_document", "document_id"),
    )
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id"))
    given_label: Mapped[str | None] = mapped_column(String(255))
    suggested_label: Mapped[str | None] = mapped_column(String(255))
    label_quality: Mapped[float | None] = mapped_column(Float)
    is_label_issue: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[str] = mapped_column(String(32), default="label")
    review_status: Mapped[str | None] = mapped_column(String(32))
    reviewed_label: Mapped[str | None] = mapped_column(String(255))
    #: Why flagged, for the rows that are (top probabilities, outlier score, near-duplicate group, CROWDLAB consensus).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ExportVersion(Base):
    """A dataset version written by `curate export` (addressed by its content hash)."""

    __tablename__ = "export_versions"
    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    out: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
