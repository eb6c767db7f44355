"""The typed project config (`curate.toml`), validated before anything runs.

Why pydantic with `extra="forbid"`: a misspelt key is refused with its location instead of silently ignored.
Where the config comes from: `--config FILE`, else `CURATE_CONFIG`, else the nearest `curate.toml` in the working
directory or its parents, else built-in defaults. The store URL: `--db`, else `CURATE_DATABASE_URL`, else
`[store] url`, else `./.curate/curate.db` (SQLite) under the working directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curation.errors import ConfigError

__all__ = [
    "DOMAINS",
    "Config",
    "DomainConfig",
    "load_config",
    "find_config_file",
    "resolve_db_url",
]

DOMAINS: tuple[str, ...] = ("customer_service", "financial")
PII_TYPES: tuple[str, ...] = ("EMAIL", "CARD", "IBAN", "SSN", "PHONE", "ROUTING", "ACCOUNT", "IP")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Strict):
    url: str | None = None


class DomainConfig(_Strict):
    """Per-domain settings. `labels` empty: the label set is taken from the labels already in the store."""

    labels: list[str] = Field(default_factory=list)
    label_groups: dict[str, list[str]] = Field(default_factory=dict)
    labeling_template: str | None = None

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, v: list[str]) -> list[str]:
        dupes = sorted({x for x in v if v.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {dupes}")
        if any(not x.strip() for x in v):
            raise ValueError("labels must be non-empty strings")
        return v

    @model_validator(mode="after")
    def _groups_within_labels(self) -> DomainConfig:
        if self.labels and self.label_groups:
            unknown = sorted({x for g in self.label_groups.values() for x in g} - set(self.labels))
            if unknown:
                raise ValueError(f"label_groups name labels not in labels: {unknown}")
        return self


class PIIConfig(_Strict):
    types: list[str] = Field(default_factory=lambda: list(PII_TYPES))

    @field_validator("types")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in PII_TYPES]
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; valid: {list(PII_TYPES)}")
        return v


class IngestConfig(_Strict):
    chunk_rows: int = Field(25_000, ge=100)
    commit_rows: int = Field(100_000, ge=1)
    max_chars: int = Field(20_000, ge=10)
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1)
    shingle_size: int = Field(1, ge=1, le=5)
    num_perm: int = Field(64, ge=16, le=256)
    bands: int = Field(16, ge=2, le=128)
    near_duplicate_min_bands: int = Field(2, ge=1, le=128)
    workers: int | None = Field(None, ge=0, le=64)

    @model_validator(mode="after")
    def _bands_divide(self) -> IngestConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")
        if self.near_duplicate_min_bands > self.bands:
            raise ValueError(
                f"near_duplicate_min_bands ({self.near_duplicate_min_bands}) cannot exceed bands ({self.bands})"
            )
        return self


class LabelStudioConfig(_Strict):
    url: str | None = None
    api_key: str | None = None
    project: str = "curate"
    annotations_per_task: int = Field(1, ge=1, le=20)
    batch_size: int = Field(1000, ge=1, le=10_000)
    max_text_chars: int = Field(100_000, ge=100)
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(4, ge=0, le=20)
    pull_overlap_s: float = Field(2.0, ge=0, le=3600)


class ActiveLearningConfig(_Strict):
    model: str | None = None
    device: str = "auto"
    strategy: str = "margin"
    batch: int = Field(100, ge=1)
    seed: int = 0
    min_labels: int = Field(20, ge=1)
    mode: Literal["fast", "finetune"] = "fast"
    head: Literal["logreg", "mlp"] = "logreg"
    mc_samples: int = Field(10, ge=2, le=100)
    finetune_epochs: int = Field(3, ge=1, le=100)
    embeddings_dir: str | None = None


class ExportConfig(_Strict):
    split: str = "80/10/10"
    seed: int = 13
    format: Literal["parquet", "jsonl", "csv", "hf"] = "parquet"
    out: str = "exports"


class NightlyConfig(_Strict):
    project: str | None = None
    batch: int = Field(100, ge=1)
    strategy: str = "margin"
    out: str = "nightly"
    domain: str | None = None


class Config(_Strict):
    """The whole project config; every section optional."""

    store: StoreConfig = StoreConfig()
    domains: dict[str, DomainConfig] = Field(default_factory=lambda: {d: DomainConfig() for d in DOMAINS})
    pii: PIIConfig = PIIConfig()
    ingest: IngestConfig = IngestConfig()
    labelstudio: LabelStudioConfig = LabelStudioConfig()
    active_learning: ActiveLearningConfig = ActiveLearningConfig()
    export: ExportConfig = ExportConfig()
    nightly: NightlyConfig = NightlyConfig()

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, v: dict[str, DomainConfig]) -> dict[str, DomainConfig]:
        unknown = [d for d in v if d not in DOMAINS]
        if unknown:
            raise ValueError(f"unknown domains {unknown}; valid: {list(DOMAINS)}")
        return {d: v.get(d, DomainConfig()) for d in DOMAINS}

    def domain(self, name: str) -> DomainConfig:
        check_domain(name)
        return self.domains.get(name, DomainConfig())

    # Where the file was read from (None: defaults); not part of the TOML.
    path: Path | None = Field(default=None, exclude=True)


def check_domain(name: str) -> str:
    if name not in DOMAINS:
        raise ConfigError(f"Unknown domain {name!r}.", hint=f"use one of: {', '.join(DOMAINS)}")
    return name


def find_config_file(start: Path | None = None) -> Path | None:
    env = os.environ.get("CURATE_CONFIG")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "curate.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate the config; a bad file is a `ConfigError` that names each wrong key."""
    file = Path(path) if path else find_config_file()
    if file is None:
        return Config()
    if not file.is_file():
        raise ConfigError(f"Config file {file} does not exist.", hint="pass an existing file to --config")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{file} is invalid: {problems}", hint="fix or remove those keys") from exc
    return cfg.model_copy(update={"path": file.resolve()})


def resolve_db_url(db: str | None, config: Config) -> str:
    """`--db`, else CURATE_DATABASE_URL, else the config, else ./.curate/curate.db."""
    from store.engine import default_sqlite_url

    if db:
        return _as_url(db)
    env = os.environ.get("CURATE_DATABASE_URL")
    if env:
        return _as_url(env)
    if config.store.url:
        return _as_url(config.store.url)
    return default_sqlite_url()


def _as_url(value: str) -> str:
    """Accept a bare file path as a SQLite store."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"
