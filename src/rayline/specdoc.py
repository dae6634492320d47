"""The spec reference (docs/spec.md), generated from the pydantic models so it cannot drift.

python -m rayline.specdoc > docs/spec.md
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from rayline import plugins
from rayline.modelspec import ModelSpec
from rayline.spec import MODEL_SPECS, Spec


def _family_name(cls: type[BaseModel]) -> str:
    return str(typing.get_args(cls.model_fields["family"].annotation)[0])


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, dict):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _members(annotation: Any) -> list[Any]:
    """The annotation and every type inside it (unions, Annotated, containers)."""
    found = [annotation]
    for arg in typing.get_args(annotation):
        found += _members(arg)
    return found


def _default(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value, default=str)}`"


def _section(title: str, model: type[BaseModel], out: list[str], seen: set[type[BaseModel]]) -> None:
    out += [f"## `{title}`", "", (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else "", ""]
    out += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        sub = [a for a in _members(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(sub) == 1 and sub[0] not in seen:  # several (the model families) get their own sections
            path = name if title == "spec" else f"{title}.{name}"
            nested.append((f"{path}.<name>" if typing.get_origin(annotation) is dict else path, sub[0]))
        description = (field.description or "").replace("|", "\\|")
        kind = _type_name(annotation)
        if len(sub) > 1 and all(issubclass(a, ModelSpec) for a in sub):
            kind, description = "section", "one family's section, picked by its `family` field (below)"
        out.append(f"| `{name}` | {kind} | {_default(field)} | {description} |")
    out.append("")
    for sub_title, sub_model in nested:
        seen.add(sub_model)
        _section(sub_title, sub_model, out, seen)


def reference(families: Collection[str] | None = None) -> str:
    """The reference of the spec, with a section per registered family (or per name in ``families``)."""
    out = [
        "# Spec reference",
        "",
        "Generated from `src/rayline/spec.py` and every registered family's `spec.py` by",
        "`python -m rayline.specdoc`; a test checks it is current.",
        "Unknown fields are errors. Override any field with `--set section.field=value`.",
        "",
    ]
    seen: set[type[BaseModel]] = {Spec}
    _section("spec", Spec, out, seen)
    for family in sorted(MODEL_SPECS, key=_family_name):
        name = _family_name(family)
        if families is None or name in families:
            _section(f"model (family: {name}, learns from {family.data_kind})", family, out, seen)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference(plugins.installed_families()), end="")
