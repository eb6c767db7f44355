"""Label configs: every template renders with a label set, validates, and refuses drift between choices and labels."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from curation.config import Config
from curation.errors import ConfigError
from curation.labelconfig import (
    TEMPLATES,
    auto_groups,
    build_label_config,
    config_choices,
    render_label_config,
    template_path,
    validate_label_config,
)
from tests.conftest import shared_data

SENTIMENT = ["positive", "negative", "neutral"]


def banking77_labels() -> list[str]:
    return json.loads(shared_data("banking77", "categories.json").read_text(encoding="utf-8"))


def choices_in(xml: str) -> list[str]:
    return [el.get("value", "") for el in ET.fromstring(xml).iter("Choice")]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_renders_and_validates(name: str) -> None:
    xml = render_label_config(template_path(name), SENTIMENT)
    cfg = validate_label_config(xml, SENTIMENT, template=name)
    assert choices_in(cfg.xml) == SENTIMENT
    assert cfg.labels == tuple(SENTIMENT)
    assert "text" in cfg.data_keys
    assert config_choices(cfg.xml) == SENTIMENT


def test_review_template_shows_given_and_suggested_label() -> None:
    cfg = build_label_config(domain="financial", labels=SENTIMENT, kind="review")
    assert set(cfg.data_keys) == {"text", "given_label", "suggested_label"}


def test_banking77_intents_are_grouped_and_filterable() -> None:
    labels = banking77_labels()
    assert len(labels) == 77
    cfg = build_label_config(domain="customer_service", labels=labels)
    root = ET.fromstring(cfg.xml)
    assert sorted(choices_in(cfg.xml)) == sorted(labels)
    filters = list(root.iter("Filter"))
    assert len(filters) == 1 and filters[0].get("toName") == "label"
    choices = next(root.iter("Choices"))
    groups = choices.findall("View")
    assert len(groups) >= 5
    assert all(len(g.findall("Choice")) >= 3 for g in groups)
    assert max(len(g.findall("Choice")) for g in groups) < 40
    headers = [g.find("Header").get("value") for g in groups]  # type: ignore[union-attr]
    assert any(h.startswith("card (") for h in headers)
    assert any(h.startswith("top up (") for h in headers)


def test_configured_groups_win_over_automatic_ones() -> None:
    cfg = Config.model_validate({"domains": {"customer_service": {
        "labels": ["a1", "a2", "b1"], "label_groups": {"alpha": ["a1", "a2"], "beta": ["b1"]}}}})
    lc = build_label_config(domain="customer_service", labels=["a1", "a2", "b1"], config=cfg)
    views = next(ET.fromstring(lc.xml).iter("Choices")).findall("View")
    assert [v.find("Header").get("value") for v in views] == ["alpha (2)", "beta (1)"]  # type: ignore[union-attr]


def test_few_labels_are_not_grouped_and_get_hotkeys() -> None:
    assert auto_groups(SENTIMENT) == {}
    cfg = build_label_config(domain="financial", labels=SENTIMENT)
    keys = [el.get("hotkey") for el in ET.fromstring(cfg.xml).iter("Choice")]
    assert keys == ["1", "2", "3"]


def test_labels_with_markup_characters_are_escaped() -> None:
    labels = ['a & b', 'x < y', 'say "hi"', "it's"]
    cfg = build_label_config(domain="financial", labels=labels)
    assert choices_in(cfg.xml) == labels
    assert config_choices(cfg.xml) == labels


def test_choices_must_equal_the_label_set() -> None:
    xml = render_label_config(template_path("sentiment"), SENTIMENT)
    with pytest.raises(ConfigError, match="labels of the set without a choice: \\['mixed'\\]"):
        validate_label_config(xml, [*SENTIMENT, "mixed"])
    with pytest.raises(ConfigError, match="choices that are not labels of the set: \\['neutral'\\]"):
        validate_label_config(xml, ["positive", "negative"])


def test_broken_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="not well-formed XML"):
        validate_label_config("<View><Text name='text' value='$text'>", SENTIMENT)
    wrong_target = ('<View><Text name="body" value="$body"/><Choices name="label" toName="body">'
                    '<Choice value="positive"/></Choices></View>')
    with pytest.raises(ConfigError, match='toName="text"'):
        validate_label_config(wrong_target, ["positive"])
    no_choices = '<View><Text name="text" value="$text"/></View>'
    with pytest.raises(ConfigError, match="exactly one"):
        render_label_config(no_choices, SENTIMENT)


def test_bad_label_strings_are_refused() -> None:
    with pytest.raises(ConfigError, match="control characters"):
        build_label_config(domain="financial", labels=["ok", "bad\x07"])
    with pytest.raises(ConfigError, match="No label set"):
        build_label_config(domain="financial", labels=[])


def test_custom_template_from_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    custom = tmp_path / "mine.xml"
    custom.write_text('<View><Text name="text" value="$text"/><Choices name="label" toName="text"/></View>')
    (tmp_path / "curate.toml").write_text('[domains.financial]\nlabeling_template = "mine.xml"\n')
    from curation.config import load_config

    cfg = load_config(tmp_path / "curate.toml")
    lc = build_label_config(domain="financial", labels=SENTIMENT, config=cfg)
    assert lc.template == "mine.xml"
    assert choices_in(lc.xml) == SENTIMENT


@pytest.mark.integration
@pytest.mark.parametrize("kind,domain", [("labeling", "customer_service"), ("labeling", "financial"),
                                         ("review", "customer_service")])
def test_label_studio_accepts_every_rendered_config(ls_client, kind: str, domain: str) -> None:  # type: ignore[no-untyped-def]
    labels = banking77_labels() if domain == "customer_service" else SENTIMENT
    cfg = build_label_config(domain=domain, labels=labels, kind=kind)
    project = ls_client.create_project(title=f"cfg-{kind}-{domain}", label_config=cfg.xml)
    try:
        stored = ls_client.get_project(project["id"])["label_config"]
        assert sorted(config_choices(stored)) == sorted(labels)
    finally:
        ls_client.delete_project(project["id"])
