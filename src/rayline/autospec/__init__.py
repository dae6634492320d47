"""A spec decided from the data: ``rayline init DATA`` and ``rayline run DATA --label COL``.

Reads a sample of a table (or lists an image folder) and decides what a user otherwise writes by
hand: the kind of data, the label, the task, the features (ids and constant columns left out, text
taken as categories), the family, the metric and a small search space. Every decision keeps its
reason: the YAML written carries it as a comment and the CLI prints it, so a user reads why and
changes what is wrong. The result is an ordinary spec; nothing downstream knows it was inferred.

``tables`` and ``images`` decide for each kind of data; ``plan`` holds the spec being decided,
the reasons, the family's model and search space, and writes the commented YAML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rayline.atomic import atomic_output
from rayline.autospec.images import decide_images, image_column
from rayline.autospec.plan import Plan
from rayline.autospec.tables import decide_table
from rayline.data import image_read
from rayline.data.table_schema import local_schema, table_format
from rayline.errors import DataError, SpecError
from rayline.spec import Spec, parse_override, spec_from_dict

__all__ = ["Draft", "init_spec", "safe_name"]

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


@dataclass
class Draft:
    """A spec decided from data: the validated spec, its commented YAML and what was decided, why."""

    spec: Spec
    text: str  # the commented YAML; loading it gives ``spec``
    summary: list[str]  # one short line per decision, as the CLI prints them
    kind: Literal["table", "images"]
    task: str
    label: str | None
    features: list[str] = field(default_factory=list)  # tables: the feature columns kept
    categorical: list[str] = field(default_factory=list)  # tables: text features, taken as categories
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the commented YAML to ``path`` (write-then-rename); an existing file only with ``overwrite``."""
        target = Path(path).expanduser()
        if target.exists() and not overwrite:
            raise SpecError(f"{target} already exists", hint="pass --force to replace it, or --out another file")
        with atomic_output(target) as tmp:
            tmp.write_text(self.text, encoding="utf-8")
        return target.resolve()


# ----------------------------------------------------------------------------------- entry
def init_spec(
    source: str | os.PathLike[str],
    *,
    label: str | None = None,
    family: str | None = None,
    name: str | None = None,
    overrides: Iterable[str] = (),
) -> Draft:
    """Decide a spec from the data at ``source``; ``overrides`` (``KEY.PATH=VALUE``) apply on top."""
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"rayline.init_spec: source must be a path or URI (str or os.PathLike), got {type(source).__name__}"
        )
    for param, value in (("label", label), ("family", family), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"rayline.init_spec: {param} must be a str or None, got {type(value).__name__}")
    where = os.fspath(source).strip()
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise SpecError(
            f"--name {name!r}: expected letters, digits, '_', '.' or '-' (64 at most, a letter or digit first)"
        )
    plan = Plan(name or safe_name(where))
    kind = _detect(where)
    if kind[0] == "table":
        decide_table(plan, where, "csv" if kind[1] == "csv" else "parquet", label, family)
    else:
        decide_images(plan, where, kind[1], label, family)
    for text in overrides:
        key, value = parse_override(text)
        plan.set(key, value, "set on the command line (--set)")
    spec = spec_from_dict(plan.tree, origin=f"the spec decided from {where}")
    return Draft(
        spec=spec,
        text=plan.render(),
        summary=plan.summary,
        kind=kind[0],
        task=plan.task,
        label=spec.data.label,
        features=list(spec.data.features or []) if kind[0] == "table" else [],
        categorical=plan.categorical,
        left_out=plan.left_out,
    )


def safe_name(source: str) -> str:
    """A spec name from a file or folder name: ``Churn data (2024).csv`` -> ``Churn-data-2024``."""
    base = source.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-._")
    return base[:64].rstrip("-._") or "model"


# ---------------------------------------------------------------------------- data kinds
def _detect(source: str) -> tuple[Literal["table", "images"], str]:
    """("table", parquet|csv) or ("images", folder|parquet): by suffix, folder contents, or a binary column."""
    lowered = source.lower().rstrip("/")
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{source} does not exist")
        if path.is_dir():
            tables = any(
                p.name.lower().endswith(TABLE_SUFFIXES)
                for p in path.rglob("*")
                if p.is_file() and not p.name.startswith((".", "_"))
            )
            if not tables:
                if image_read.list_images(str(path)):
                    return "images", "folder"
                raise DataError(f"{source}: holds no table (parquet or CSV) and no images")
        elif lowered.endswith(image_read.EXTENSIONS):
            image_read.list_images(str(path))  # says a folder of images is expected
        elif not lowered.endswith(TABLE_SUFFIXES):
            raise DataError(
                f"{source}: expected a parquet or CSV file, a folder of them, an image folder or an image parquet"
            )
    fmt = table_format(source, "auto")
    if fmt == "parquet" and image_column(local_schema(source, fmt)[0]) is not None:
        return "images", "parquet"
    return "table", fmt
