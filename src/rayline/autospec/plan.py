"""The spec being decided: its fields, a reason per field, the summary lines, the family's model
and search space, and the commented YAML (each reason a comment beside its field)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Literal

import yaml

from rayline.errors import SpecError
from rayline.spec import FAMILIES, MODEL_SPECS


class Plan:
    """The spec tree being decided, a reason per field (the YAML's comments) and the summary lines."""

    def __init__(self, name: str) -> None:
        self.tree: dict[str, Any] = {"name": name}
        self.why: dict[str, str] = {}
        self.summary: list[str] = []
        self.task = ""
        self.categorical: list[str] = []
        self.left_out: dict[str, str] = {}

    def set(self, dotted: str, value: Any, why: str | None = None) -> None:
        node = self.tree
        keys = dotted.split(".")
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
        if why:
            self.why[dotted] = why

    def say(self, line: str) -> None:
        self.summary.append(line)

    def render(self) -> str:
        lines = [
            "# A spec decided from a sample of the data (rayline init); each comment says why. Change what is wrong;",
            "# `rayline validate` on this file prints every field, defaults included.",
        ]
        _render(self.tree, "", 0, self.why, lines)
        return "\n".join(lines) + "\n"


# Sections written as indented blocks; any other mapping is one flow line ({randint: [3, 10]}).
_BLOCKS = {"data", "data.image", "split", "model", "tune", "tune.space", "train"}
_WIDTH = 110


def _flow(value: Any) -> str:
    text = str(yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False))
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _render(node: dict[str, Any], path: str, depth: int, why: dict[str, str], lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in node.items():
        here = f"{path}.{key}" if path else key
        block = isinstance(value, dict) and here in _BLOCKS
        text = f"{pad}{key}:" if block else f"{pad}{key}: {_flow(value)}"
        note = why.get(here)
        if note and len(text) + len(note) + 4 <= _WIDTH:
            lines.append(f"{text}  # {note}")
        else:
            if note:
                lines += textwrap.wrap(note, _WIDTH, initial_indent=f"{pad}# ", subsequent_indent=f"{pad}# ")
            lines.append(text)
        if block:
            _render(value, here, depth + 1, why, lines)


# -------------------------------------------------------------------------------- families
# A small search per family: a few trials, so `rayline run` on a few thousand rows takes a minute or
# two on a laptop; widen tune.space and num_samples for more.
_MODELS: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
    "xgboost": (
        {
            "num_boost_round": 100,
            "early_stopping_rounds": 10,
            "params": {"max_depth": 6, "eta": 0.3, "tree_method": "hist"},
        },
        {"max_depth": {"randint": [3, 10]}, "eta": {"loguniform": [0.03, 0.3]}},
        4,
    ),
    "lightgbm": (
        {"num_boost_round": 100, "early_stopping_rounds": 10, "params": {"num_leaves": 31, "learning_rate": 0.1}},
        {"num_leaves": {"randint": [8, 64]}, "learning_rate": {"loguniform": [0.03, 0.3]}},
        4,
    ),
    "resnet18": ({"epochs": 3, "batch_size": 64, "lr": 0.001}, {"lr": {"loguniform": [0.0003, 0.003]}}, 3),
}
_DEFAULT_FAMILY = {"table": "xgboost", "images": "resnet18"}


def choose_family(given: str | None, kind: Literal["table", "images"], source: str) -> tuple[str, str]:
    """(family, why): the one given, if it learns from this kind of data, else the kind's default."""
    if given is None:
        family = _DEFAULT_FAMILY[kind]
        why = "the default for tables; --family lightgbm for LightGBM" if kind == "table" else "the default for images"
        return family, why
    learns = {name: cls.data_kind for name, cls in zip(FAMILIES, MODEL_SPECS, strict=True)}
    if given not in learns:
        raise SpecError(f"--family {given!r}: unknown family; expected one of {', '.join(FAMILIES)}")
    if learns[given] != kind:
        holds = "images" if kind == "images" else "a table"
        raise SpecError(f"--family {given}: learns from {learns[given]}, but {source} holds {holds}")
    return given, "given with --family"


def add_model(plan: Plan, family: tuple[str, str]) -> None:
    name, why = family
    fields, space, trials = _MODELS.get(name, ({}, {}, 0))
    plan.set("model", {"family": name, **fields})
    plan.why["model.family"] = why
    loss = "RMSE" if plan.task == "regression" else "log loss"
    plan.set("metric", "valid_loss", f"{loss} on the held-out split; picks the best run and trial")
    plan.set("mode", "min")
    plan.say(f"family: {name} ({why}); metric: valid_loss, lower is better")
    if space:
        plan.set(
            "tune",
            {"num_samples": trials, "space": space},
            f"a small search ({trials} trials); widen the space or num_samples for more",
        )
        plan.say(f"tune: {trials} trials of {', '.join(space)} (--no-tune trains once)")
    else:
        plan.say(f"tune: none (no search space known for family {name}; add tune.space to search)")


def absolute(source: str) -> str:
    """A local path made absolute: the spec may be run from another folder; a URI as it is."""
    return source if "://" in source else str(Path(source).expanduser().resolve())
