"""Deciding from images: a class-subfolder tree or a parquet of encoded images; the classes,
the colour mode and the size the model sees."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from rayline.autospec.plan import Plan, absolute, add_model, choose_family
from rayline.autospec.tables import pick_label
from rayline.data import image_read
from rayline.data.table_schema import local_schema, read_local
from rayline.errors import DataError, SpecError, read_error

IMAGE_MAX_SIDE = 64  # larger images are resized: ResNet18's cost on CPUs grows with the pixels


def decide_images(plan: Plan, source: str, how: str, label: str | None, family: str | None) -> None:
    model = choose_family(family, "images", source)
    if how == "folder":
        if label is not None:
            raise SpecError(f"{source}: --label {label!r}: an image folder's classes are its subfolders; drop --label")
        files = image_read.scan_folder(source)
        classes = image_read.check_classes([c for _, c in files], source)
        blobs = [b for k in classes for b in _read_some([str(p) for p, c in files if c == k])]
        plan.say(f"{source}: images, {len(files):,} files in {len(classes)} class folders ({_some(classes)})")
        plan.set("data.source", absolute(source), "a folder of images, DIR/<class>/<image>")
        plan.set("data.format", "images")
        plan.say("label: the class folder of each image")
    else:
        schema = local_schema(source, "parquet")[0]
        image_col = image_column(schema)
        assert image_col is not None  # _detect found it
        names = [n for n in schema.names if n != image_col]
        frame = read_local(source, "parquet", columns=names).to_pandas()
        chosen, why = pick_label(frame, names, label, source)
        classes = image_read.check_classes([str(v) for v in frame[chosen].dropna()], source)
        blobs = [b for b in map(_blob, _head(source, image_col)) if b]
        plan.say(f"{source}: an image parquet, {len(frame):,} images in column {image_col!r}, {len(classes)} classes")
        plan.set("data.source", absolute(source), "a parquet of encoded images")
        plan.set("data.format", "parquet")
        plan.set("data.label", chosen, why)
        plan.set("data.features", [image_col], "the column of encoded images")
        plan.say(f"label: {chosen} ({why})")
    plan.task = "binary" if len(classes) == 2 else "multiclass"
    plan.say(f"task: {plan.task} ({len(classes)} classes)")
    mode, size, why_size = _image_shape(blobs, source)
    plan.set("data.image", {"mode": mode, "size": list(size)}, why_size)
    plan.say(f"images: {why_size}")
    plan.set("split", {"valid_fraction": 0.2, "seed": 42}, "a fifth of the images held out: tuning and the report")
    add_model(plan, model)


def _head(source: str, column: str, rows: int = 32) -> list[Any]:
    """The first images of a parquet, without reading the others."""
    import pyarrow.dataset as pads

    try:
        return list(pads.dataset(source, format="parquet").head(rows, columns=[column]).column(column).to_pylist())
    except (pa.ArrowException, OSError, ValueError) as err:
        raise read_error(source, err, "the images") from None


def _some(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def _read_some(paths: Sequence[str], n: int = 3) -> list[bytes]:
    """The bytes of the first ``n`` readable files: a few of each class show the mode and sizes."""
    found: list[bytes] = []
    for path in paths[: n * 2]:
        try:
            found.append(Path(path).read_bytes())
        except OSError:
            continue
        if len(found) == n:
            break
    return found


def _blob(value: Any) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, bytes | bytearray) else None


def _image_shape(blobs: Sequence[bytes], source: str) -> tuple[str, tuple[int, int], str]:
    """(mode, (height, width), why) from a few images: grey when every channel is equal."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    sizes, grey = set(), True
    for raw in blobs:
        try:
            with Image.open(io.BytesIO(raw)) as image:
                sizes.add((image.height, image.width))
                if image.mode not in ("L", "1", "I", "I;16", "F"):
                    rgb = np.asarray(image.convert("RGB"))
                    grey = grey and bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
        except (UnidentifiedImageError, OSError):
            continue
    if not sizes:
        raise DataError(f"{source}: none of the images looked at decodes")
    mode = "L" if grey else "RGB"
    colour = "grayscale" if grey else "colour"
    (h, w), *rest = sorted(sizes)
    if not rest and max(h, w) <= IMAGE_MAX_SIDE:
        return mode, (h, w), f"{colour} {h}x{w}, kept at that size"
    side = IMAGE_MAX_SIDE
    what = "of several sizes" if rest else f"{h}x{w}"
    return mode, (side, side), f"{colour}, {what}: resized to {side}x{side} (CPU time grows with pixels)"


def image_column(schema: pa.Schema) -> str | None:
    """The column of encoded images in a parquet: binary, or a struct with bytes (Ray Data's export)."""
    found = []
    for item in schema:
        t = item.type
        binary = pa.types.is_binary(t) or pa.types.is_large_binary(t)
        if binary or (pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields))):
            found.append(item.name)
    return "image" if "image" in found else (found[0] if found else None)
