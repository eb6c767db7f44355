"""Prometheus text-format metrics of a night, for node_exporter's textfile collector.

Why a file written by rename: the collector reads `*.prom` files at any moment, so a half-written file must never be
visible; the text goes to a temporary file in the same folder and replaces the old one atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

__all__ = ["render_metrics", "write_metrics"]

_STATUSES = ("ok", "failed", "skipped", "blocked")


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key).lower()


def render_metrics(summary: dict[str, Any], *, last_success: float | None) -> str:
    """The night's summary (`run_nightly`'s result) as Prometheus exposition text."""
    lines = [
        "# HELP curate_nightly_success 1 if the last nightly run succeeded, else 0.",
        "# TYPE curate_nightly_success gauge",
        f"curate_nightly_success {1 if summary.get('status') == 'ok' else 0}",
        "# HELP curate_nightly_duration_seconds Wall time of the last nightly run.",
        "# TYPE curate_nightly_duration_seconds gauge",
        f"curate_nightly_duration_seconds {float(summary.get('seconds') or 0):.3f}",
        "# HELP curate_nightly_last_run_timestamp_seconds When the last nightly run ended (Unix time).",
        "# TYPE curate_nightly_last_run_timestamp_seconds gauge",
        f"curate_nightly_last_run_timestamp_seconds {float(summary.get('finished_ts') or 0):.0f}",
        "# HELP curate_nightly_last_success_timestamp_seconds When a nightly run last succeeded (Unix time).",
        "# TYPE curate_nightly_last_success_timestamp_seconds gauge",
        f"curate_nightly_last_success_timestamp_seconds {float(last_success or 0):.0f}",
        "# HELP curate_nightly_step_seconds Wall time of each step of the last nightly run.",
        "# TYPE curate_nightly_step_seconds gauge",
    ]
    steps: dict[str, Any] = summary.get("steps", {})
    for step, info in steps.items():
        lines.append(f'curate_nightly_step_seconds{{step="{_esc(step)}"}} {float(info.get("seconds") or 0):.3f}')
    lines += ["# HELP curate_nightly_step_status 1 for the status each step ended with.",
              "# TYPE curate_nightly_step_status gauge"]
    for step, info in steps.items():
        for status in _STATUSES:
            value = 1 if info.get("status") == status else 0
            lines.append(f'curate_nightly_step_status{{step="{_esc(step)}",status="{status}"}} {value}')
    lines += ["# HELP curate_nightly_step_count Numeric counts each step reported.",
              "# TYPE curate_nightly_step_count gauge"]
    for step, info in steps.items():
        for key, value in (info.get("counts") or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            lines.append(f'curate_nightly_step_count{{step="{_esc(step)}",count="{_name(key)}"}} {value}')
    return "\n".join(lines) + "\n"


def write_metrics(path: Path | str, summary: dict[str, Any], *, last_success: float | None) -> Path:
    """Write the metrics atomically (temporary file + rename in the same folder)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(render_metrics(summary, last_success=last_success), encoding="utf-8")
    os.replace(tmp, target)
    return target
