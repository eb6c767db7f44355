"""Label Studio configs: render a template of `ui_config/` with a label set, and validate it before use.

Why validate ourselves: Label Studio accepts predictions and choices that its config does not know, and a project
whose choices drift from the store's labels yields annotations no one can train on. So every rendered config must
parse (XML, then the SDK's LabelInterface), read the task's `$text`, and offer exactly the label set: every choice a
known label and every label a choice.

Why grouping: BANKING77 has 77 intents; a flat list of 77 radio buttons is unusable. Choices are grouped under
headers (from `domains.<d>.label_groups` in the config, else automatically by the most common word of the label
names), and the intent and review templates carry a filter box to type into.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.errors import ConfigError

__all__ = [
    "TEMPLATES",
    "DOMAIN_TEMPLATES",
    "FROM_NAME",
    "TO_NAME",
    "LabelConfig",
    "template_path",
    "template_for",
    "auto_groups",
    "render_label_config",
    "validate_label_config",
    "build_label_config",
    "config_choices",
]

UI_CONFIG = Path(__file__).resolve().parents[1] / "ui_config"
TEMPLATES: dict[str, str] = {"intent": "intent.xml", "sentiment": "sentiment.xml", "review": "review.xml"}
DOMAIN_TEMPLATES: dict[str, str] = {"customer_service": "intent", "financial": "sentiment"}
#: The control every template names `label` and the object it labels, `text` (read from task data `$text`).
FROM_NAME = "label"
TO_NAME = "text"
GROUP_MIN_LABELS = 20
_HOTKEY_MAX = 9
_STOP = {"a", "an", "and", "or", "not", "my", "the", "of", "to", "for", "in", "on", "is", "by", "after", "with",
         "from", "other"}
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


@dataclass(frozen=True)
class LabelConfig:
    """A rendered, validated config: its XML, label set, and the task data keys it reads."""

    xml: str
    labels: tuple[str, ...]
    template: str
    data_keys: tuple[str, ...] = field(default=("text",))
    from_name: str = FROM_NAME
    to_name: str = TO_NAME

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.xml.encode("utf-8")).hexdigest()


def template_path(name: str, *, base: Path | None = None) -> Path:
    """A built-in template by name (`intent`, `sentiment`, `review`) or an XML file path (relative to `base`)."""
    if name in TEMPLATES:
        return UI_CONFIG / TEMPLATES[name]
    path = Path(name).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ConfigError(
            f"Label config template {name!r} is neither a built-in one nor an existing file ({path}).",
            hint=f"use one of {sorted(TEMPLATES)} or the path of an XML file",
        )
    return path


def template_for(*, domain: str, kind: str = "labeling", config: Any = None) -> Path:
    """The template of a project kind and domain: `review` for reviews, else the domain's (config may override)."""
    if kind == "review":
        return template_path("review")
    if config is not None:
        custom = config.domain(domain).labeling_template
        if custom:
            base = config.path.parent if getattr(config, "path", None) else None
            return template_path(custom, base=base)
    if domain not in DOMAIN_TEMPLATES:
        raise ConfigError(f"No label config template for domain {domain!r}.",
                          hint="set domains.<domain>.labeling_template in curate.toml")
    return template_path(DOMAIN_TEMPLATES[domain])


def _tokens(label: str) -> list[str]:
    return [t for t in re.split(r"[\s_\-/]+", label.lower()) if t]


def auto_groups(labels: Sequence[str]) -> dict[str, list[str]]:
    """Group labels by their most common word (shared by at least 3 labels); the rest under `other`.

    Empty when there are few labels or grouping would not split them.
    """
    if len(labels) < GROUP_MIN_LABELS:
        return {}
    freq = Counter(t for lab in labels for t in set(_tokens(lab)) if t not in _STOP and not t.isdigit())
    groups: dict[str, list[str]] = {}
    for lab in labels:
        keys = [t for t in _tokens(lab) if freq.get(t, 0) >= 3]
        key = max(keys, key=lambda t: freq[t]) if keys else "other"
        groups.setdefault(key, []).append(lab)
    small = [k for k, v in groups.items() if k != "other" and len(v) < 3]
    for k in small:
        groups.setdefault("other", []).extend(groups.pop(k))
    if len(groups) < 2:
        return {}
    named = {(_group_name(k, v) if k != "other" else k): v for k, v in groups.items()}
    groups = named
    ordered = {k: groups[k] for k in sorted(groups) if k != "other"}
    if "other" in groups:
        ordered["other"] = groups["other"]
    return ordered


def _group_name(key: str, members: Sequence[str]) -> str:
    """`top up` rather than `up` when most members share the same two-word phrase around the key."""
    pairs = Counter(
        p for lab in members
        for p in {(a, b) for a, b in zip(_tokens(lab), _tokens(lab)[1:], strict=False) if key in (a, b)}
    )
    if pairs:
        pair, n = pairs.most_common(1)[0]
        if n * 3 >= 2 * len(members):
            return " ".join(pair)
    return key


def render_label_config(
    template: Path | str,
    labels: Sequence[str],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    hotkeys: bool | None = None,
) -> str:
    """Fill the template's `<Choices name="label">` with the labels (grouped when `groups` or many labels).

    `template` is a path or the XML text. Labels are escaped by ElementTree, so any string is safe.
    """
    problems = _label_problems(labels)
    if problems:
        raise ConfigError("Invalid label set: " + "; ".join(problems) + ".",
                          hint="fix domains.<d>.labels in curate.toml or --labels")
    text = template.read_text(encoding="utf-8") if isinstance(template, Path) else template
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConfigError(f"Label config template is not well-formed XML: {exc}") from exc
    choices = [el for el in root.iter("Choices") if el.get("name") == FROM_NAME]
    if len(choices) != 1:
        raise ConfigError(
            f"A label config template needs exactly one <Choices name=\"{FROM_NAME}\">; found {len(choices)}.",
            hint="see ui_config/intent.xml for the expected shape",
        )
    target = choices[0]
    for child in list(target):
        target.remove(child)
    target.text = None
    labels = list(labels)
    grouping = dict(groups) if groups else auto_groups(labels)
    use_hotkeys = len(labels) <= _HOTKEY_MAX if hotkeys is None else hotkeys

    def add_choice(parent: ET.Element, label: str, index: int) -> None:
        el = ET.SubElement(parent, "Choice", {"value": label})
        if use_hotkeys and index < _HOTKEY_MAX:
            el.set("hotkey", str(index + 1))

    if grouping:
        placed = {lab for members in grouping.values() for lab in members}
        rest = [lab for lab in labels if lab not in placed]
        ordered = [(name, [lab for lab in members if lab in labels]) for name, members in grouping.items()]
        if rest:
            ordered.append(("other" if "other" not in grouping else "more", rest))
        i = 0
        for name, members in ordered:
            if not members:
                continue
            view = ET.SubElement(target, "View")
            ET.SubElement(view, "Header", {"value": f"{name} ({len(members)})", "size": "6"})
            for lab in members:
                add_choice(view, lab, i)
                i += 1
    else:
        for i, lab in enumerate(labels):
            add_choice(target, lab, i)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode")


def _data_keys(root: ET.Element) -> list[str]:
    keys: list[str] = []
    for el in root.iter():
        value = el.get("value")
        if el.tag in ("Text", "HyperText", "Header") and value and value.startswith("$"):
            keys.append(value[1:])
    return list(dict.fromkeys(keys))


def config_choices(xml: str) -> list[str]:
    """The choices of the `label` control of any label config (e.g. of an existing project)."""
    from pipelines.ls_client import config_controls

    try:
        controls = config_controls(xml)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return list(controls.get(FROM_NAME, {}).get("labels", []))


def _label_problems(labels: Sequence[str]) -> list[str]:
    problems: list[str] = []
    bad = [lab for lab in labels if not lab or not lab.strip() or _BAD_CHARS.search(lab) or len(lab) > 255]
    if bad:
        problems.append(f"labels must be non-empty text without control characters, at most 255 chars: {bad[:5]}")
    dupes = sorted({lab for lab in labels if list(labels).count(lab) > 1})
    if dupes:
        problems.append(f"labels repeated: {dupes}")
    return problems


def validate_label_config(xml: str, labels: Sequence[str], *, template: str = "custom") -> LabelConfig:
    """Check the XML, the LabelInterface parse, the `label` -> `text` wiring, and choices == labels."""
    from pipelines.ls_client import config_controls

    problems = _label_problems(labels)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ConfigError(f"Label config is not well-formed XML: {exc}") from exc
    if root.tag != "View":
        problems.append(f"the root element must be <View>, not <{root.tag}>")
    try:
        controls = config_controls(xml)
    except ValueError as exc:
        raise ConfigError(f"Label config rejected by Label Studio's label interface: {exc}") from exc
    objects = controls.pop("__objects__", {})
    ctrl = controls.get(FROM_NAME)
    if ctrl is None or ctrl["tag"] != "Choices":
        problems.append(f"no <Choices name=\"{FROM_NAME}\"> control")
        choices: list[str] = []
    else:
        choices = ctrl["labels"]
        if TO_NAME not in ctrl["to_name"]:
            problems.append(f"<Choices name=\"{FROM_NAME}\"> must label toName=\"{TO_NAME}\", not {ctrl['to_name']}")
        cdupes = sorted({c for c in choices if choices.count(c) > 1})
        if cdupes:
            problems.append(f"choices repeated in the config: {cdupes}")
    text_obj = objects.get(TO_NAME)
    if text_obj is None or text_obj["value"] != f"${TO_NAME}":
        problems.append(f"no <Text name=\"{TO_NAME}\" value=\"${TO_NAME}\"> object")
    unknown = [c for c in choices if c not in set(labels)]
    missing = [lab for lab in labels if lab not in set(choices)]
    if unknown:
        problems.append(f"choices that are not labels of the set: {unknown[:10]}")
    if missing:
        problems.append(f"labels of the set without a choice: {missing[:10]}")
    if problems:
        raise ConfigError(
            f"Label config ({template}) is invalid: " + "; ".join(problems) + ".",
            hint="fix the template in ui_config/ or the label set (domains.<d>.labels, or --labels a,b,c)",
        )
    return LabelConfig(xml=xml, labels=tuple(labels), template=template, data_keys=tuple(_data_keys(root)))


def build_label_config(
    *,
    domain: str,
    labels: Sequence[str],
    config: Any = None,
    kind: str = "labeling",
    groups: Mapping[str, Sequence[str]] | None = None,
) -> LabelConfig:
    """Render the domain's (or the review) template with `labels` and validate it."""
    if not labels:
        raise ConfigError(
            f"No label set for domain {domain!r}.",
            hint=f"set domains.{domain}.labels in curate.toml, ingest labeled data, or pass --labels a,b,c",
        )
    path = template_for(domain=domain, kind=kind, config=config)
    if groups is None and config is not None:
        configured = config.domain(domain).label_groups
        groups = configured or None
    xml = render_label_config(path, labels, groups=groups)
    return validate_label_config(xml, labels, template=path.name)
