"""`curate report`: a self-contained page with every plot (or a clear "no data yet"), checked in a real browser."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from curation.report import PLOTS, build_report, write_report
from tests.fixtures_labelstudio import add_documents, curate_cli


def _night(store: Any, night: str, counts: dict[str, Any]) -> None:
    from store.runs import finish_run, start_run

    parent = start_run(store, kind="nightly", params={"night": night})
    child = start_run(store, kind="nightly:train", parent_id=parent, params={"night": night})
    finish_run(store, child, status="ok", stats={"status": "ok", "counts": counts})
    finish_run(store, parent, status="ok", stats={"status": "ok"})


def populated_store(tmp_path: Path) -> Any:
    """Documents with imported labels, Label Studio annotations over three days, an audit, an export, nights."""
    from pipelines.export import export_dataset
    from store.engine import open_store
    from store.models import Annotation, LabelIssue
    from store.runs import finish_run, start_run

    store = open_store(f"sqlite:///{tmp_path / 'curate.db'}")
    labels = ["card_arrival", "exchange_rate", "pin_blocked"]
    texts = [f"customer message number {i} about {labels[i % 3].replace('_', ' ')}" for i in range(60)]
    ids = add_documents(store, texts, labels=[labels[i % 3] if i < 30 else None for i in range(60)])
    day0 = datetime(2026, 11, 1, 9, tzinfo=UTC)
    rows = [{"document_id": ids[30 + i], "annotator": f"ann{i % 2}", "label": labels[i % 3], "labels": [labels[i % 3]],
             "origin": "labelstudio", "ls_annotation_id": 1000 + i, "ls_task_id": 500 + i, "project_id": 1,
             "lead_time": 3.0 + i, "created_at": day0 + timedelta(days=i // 10, minutes=i)} for i in range(30)]
    audit = start_run(store, kind="audit")
    finish_run(store, audit, status="ok")
    issues = [{"run_id": audit, "document_id": ids[i], "given_label": labels[i % 3], "suggested_label": labels[0],
               "label_quality": 0.1, "is_label_issue": True, "kind": "label",
               "review_status": "confirmed" if i < 3 else None} for i in range(5)]
    with store.connect() as conn:
        conn.execute(Annotation.__table__.insert(), rows)
        conn.execute(LabelIssue.__table__.insert(), issues)
    export_dataset(store, out=tmp_path / "exports")
    for n, (acc, agr, drift) in enumerate([(0.4, 0.7, 0.05), (0.55, 0.75, 0.02), (0.63, 0.8, 0.08)]):
        _night(store, f"2026-11-0{n + 1}", {"cv_accuracy": acc, "labeled": 30 + 10 * n, "agreement_mean": agr,
                                            "drift_cosine": drift})
    return store


def test_report_holds_every_plot(tmp_path: Path) -> None:
    store = populated_store(tmp_path)
    page, info = build_report(store)
    assert info["empty"] == [] and info["plots"] == len(PLOTS)
    for pid, title in PLOTS:
        section = re.search(rf'<section id="{pid}" data-plot="yes"><h2>[^<]+</h2><img alt="[^"]+" '
                            r'src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
        assert section, f"plot {pid} ({title}) missing"
        assert base64.b64decode(section.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    assert page.count("<tr>") == 1 + 2 * 3  # header + (nightly, train) per night
    store.close()


def test_report_on_an_empty_store_says_no_data_yet(tmp_path: Path) -> None:
    out = tmp_path / "r" / "report.html"
    proc = curate_cli("report", "--out", str(out), "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--json")
    assert proc.returncode == 0, proc.stderr
    page = out.read_text(encoding="utf-8")
    assert page.count("no data yet") == len(PLOTS)
    assert "no nightly runs yet" in page


@pytest.mark.browser
def test_report_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian chromium not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    store = populated_store(tmp_path)
    info = write_report(store, tmp_path / "report.html")
    store.close()
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(info["path"]).as_uri())
        page.wait_for_load_state("load")
        loaded = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 100)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert loaded == [True] * len(PLOTS)
    assert (tmp_path / "report.png").stat().st_size > 10_000
