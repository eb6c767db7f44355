"""Helpers shared by the benchmarks: the environment a result was measured on, and where results go."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / ".cache"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_PACKAGES = ("curate", "numpy", "pandas", "pyarrow", "sqlalchemy", "spacy", "nltk", "datasketch", "torch",
             "transformers", "sentence-transformers", "scikit-learn", "cleanlab", "label-studio-sdk", "psycopg")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Device, core count, versions and date, stored with every result."""
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, check=False).stdout.strip() or None
        # Uncommitted changes (other than results) mean the figures are not those of `rev` alone.
        changed = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!benchmarks/results"],
                                 capture_output=True, text=True, cwd=Path(__file__).parents[1], check=False)
        if rev and changed.stdout.strip():
            rev += "-dirty"
    except OSError:
        rev = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "git_revision": rev,
        "versions": versions,
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write `benchmarks/results/<name>_<device>.json` (latest) and print where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    device = "gpu" if env["gpu"] else f"cpu{env['cores']}"
    path = RESULTS / f"{name}_{device}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": env, **data}, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
