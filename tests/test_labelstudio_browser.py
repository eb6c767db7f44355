"""End to end in a real browser: an annotator logs in, labels a task of each template, `curate pull` has it.

Headless Debian Chromium (`apt-get install chromium`) driven by Playwright through `executable_path`; Playwright's
own browser download is never used.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines.ls_client import LabelStudioClient
from pipelines.push import push
from store import labelstudio as ls_store
from tests.fixtures_labelstudio import add_documents, add_predictions, cli_json, curate_cli
from tests.test_labelconfig import banking77_labels

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]
CHROMIUM = Path(os.environ.get("CURATE_TEST_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
SENTIMENT = ["positive", "negative", "neutral"]


@pytest.fixture(scope="module")
def browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing: CI must `apt-get install -y chromium`")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield b
        b.close()


def log_in(browser: Any, ls_server: Any) -> Any:
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{ls_server.url}/user/login/")
    page.fill("input[name=email]", ls_server.username)
    page.fill("input[name=password]", ls_server.password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(re.compile(r"^(?!.*/user/login).*$"))
    return page


def radio(page: Any, label: str) -> Any:
    """The radio button of a choice (its accessible name is the label plus the hotkey hint, if any)."""
    return page.get_by_role("radio", name=re.compile(rf"^{re.escape(label)}(\[\d\])?$"))


def label_task(page: Any, url: str, project_id: int, task_id: int, *, pick: str, filter_text: str | None = None,
               expect_checked: str | None = None, expect_text: tuple[str, ...] = ()) -> None:
    page.goto(f"{url}/projects/{project_id}/data?task={task_id}")
    page.get_by_role("button", name="submit").filter(has_text="Submit").wait_for()
    for text in expect_text:
        shown = page.get_by_text(text, exact=True).first
        shown.wait_for(state="visible")  # the task's text may render after the Submit button (a CI run saw it)
        assert shown.is_visible(), text
    if expect_checked:
        assert radio(page, expect_checked).is_checked()  # the model's pre-annotation
    if filter_text:
        page.get_by_placeholder(re.compile("Type to filter")).fill(filter_text)
    radio(page, pick).check()
    submit = page.get_by_role("button", name="submit")  # its aria-label; the text reads Submit, then Update
    submit.click()
    submit.filter(has_text="Update").wait_for()  # saved: the annotation is now open for editing


def test_annotator_labels_each_template_in_a_browser(browser, ls_server, ls_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from store.engine import open_store

    db = tmp_path / "curate.db"
    store = open_store(f"sqlite:///{db}")
    client = LabelStudioClient(ls_server.url, ls_server.api_key)
    intents = banking77_labels()
    cs_doc = add_documents(store, ["I still have not received my refund"], domain="customer_service")[0]
    fin_doc = add_documents(store, ["Shares slumped after the profit warning"], domain="financial")[0]
    add_predictions(store, {fin_doc: ("positive", 0.64)}, model_version="clf-v7")
    review_doc = add_documents(store, ["Card payment charged twice"], domain="customer_service")[0]

    cs = push(store, client, config=ls_config, labels=intents, document_ids=[cs_doc])
    fin = push(store, client, config=ls_config, labels=SENTIMENT, domain="financial")
    rev = push(store, client, config=ls_config, labels=intents, kind="review", document_ids=[review_doc],
               task_data={review_doc: {"given_label": "card_payment_fee_charged",
                                       "suggested_label": "transaction_charged_twice"}})
    assert rev["project"].endswith("-review") and rev["pushed"] == 1

    def task_id(result: dict[str, Any]) -> int:
        rows = ls_store.task_rows(store, result["project_ref"])
        return int(rows["ls_task_id"].iloc[0])

    page = log_in(browser, ls_server)
    label_task(page, ls_server.url, cs["project_id"], task_id(cs), pick="Refund_not_showing_up", filter_text="refund")
    label_task(page, ls_server.url, fin["project_id"], task_id(fin), pick="negative", expect_checked="positive")
    label_task(page, ls_server.url, rev["project_id"], task_id(rev), pick="transaction_charged_twice",
               filter_text="twice", expect_text=("card_payment_fee_charged", "transaction_charged_twice"))
    page.close()

    env = {"LABEL_STUDIO_URL": ls_server.url, "LABEL_STUDIO_API_KEY": ls_server.api_key}
    expected = {cs["project"]: (cs_doc, "Refund_not_showing_up", "labelstudio"),
                fin["project"]: (fin_doc, "negative", "labelstudio"),
                rev["project"]: (review_doc, "transaction_charged_twice", "review")}
    for title, (doc, label, origin) in expected.items():
        pulled = cli_json(curate_cli("pull", "--db", str(db), "--project", title, "--json", env=env, cwd=tmp_path))
        assert pulled["annotations_new"] == 1, json.dumps(pulled)
        frame = ls_store.project_annotations_frame(store, project_id=pulled["project_id"])
        (row,) = frame.itertuples()
        assert (row.document_id, row.label, row.origin) == (doc, label, origin)
        assert row.annotator == ls_server.username and row.lead_time > 0
