"""The image data kind: class-subfolder trees (``DIR/<class>/<file>``) and image parquet.

Owns the readers (``image_read``), the decoding (``image_codec``), the rows batch prediction
reads on either engine and the ``POST /predict`` body: nested 0-255 arrays or base64 PNG/JPEG
strings, decoded to the model's size and mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from rayline.data import image_drift, image_read, image_request, tensors
from rayline.data.base import Prepared, Target, input_source, resolve_source
from rayline.data.image_codec import ImageLayout, decode_request
from rayline.data.split import SplitFilter, key_mask
from rayline.data.table_schema import local_schema
from rayline.data.tensors import TensorMeta
from rayline.errors import DataError
from rayline.spec import Spec

if TYPE_CHECKING:
    import ray.data

# Past these sizes images go to Ray: training holds the decoded pixels in memory, and batch
# prediction of a folder this big would spend a while just listing it.
LOCAL_MAX_IMAGE_BYTES = 2 * 1024**3
LOCAL_MAX_IMAGES = 200_000


def layout_of(meta: Mapping[str, Any]) -> ImageLayout:
    raw = meta.get("layout")
    if not isinstance(raw, Mapping) or "size" not in raw:
        raise DataError(f"checkpoint of a {meta.get('family')} model has no image layout")
    return ImageLayout.from_dict(raw)


def _fingerprint(source: str, layout: ImageLayout, rows: int, skipped: int) -> dict[str, Any]:
    info: dict[str, Any] = {"source": source, "rows": rows, "classes": len(layout.classes), "images": layout.describe()}
    if skipped:
        info["skipped"] = skipped
    return info


def _config(spec: Spec, layout: ImageLayout) -> dict[str, Any]:
    return {"spec": spec.model_dump(mode="json"), "layout": layout.to_dict()}


class ImageKind:
    name = "images"
    output_drop: tuple[str, ...] = ("image",)  # the output names each image by its path or key

    # ----------------------------------------------------------------------------- training
    def fits_in_process(self, spec: Spec) -> bool:
        if spec.data.source.startswith("builtin:"):
            return True
        if spec.data.is_uri:
            return False
        source = resolve_source(spec)
        if image_read.source_kind(source, spec.data.format) == "parquet":
            return Path(source).is_file() and Path(source).stat().st_size * 20 <= LOCAL_MAX_IMAGE_BYTES
        files = image_read.scan_folder(source)
        if spec.data.image.size:
            h, w = spec.data.image.size
            channels = 1 if spec.data.image.mode == "L" else 3
            return len(files) * h * w * channels <= LOCAL_MAX_IMAGE_BYTES
        return len(files) <= LOCAL_MAX_IMAGES

    def prepare_local(self, spec: Spec) -> Prepared:
        from rayline.runtime import local_cpus

        start = time.perf_counter()
        source = resolve_source(spec)
        frame, layout = image_read.read_local(spec, source, threads=local_cpus())
        train, valid = image_read.split_local(frame, spec)
        return Prepared(
            config=_config(spec, layout),
            fingerprint=_fingerprint(source, layout, len(frame), len(layout.skipped)),
            rows=len(frame),
            frames={"train": train, "valid": valid},
            seconds=time.perf_counter() - start,
            skipped=layout.skipped,
        )

    def prepare_ray(self, spec: Spec) -> Prepared:
        start = time.perf_counter()
        source = resolve_source(spec)
        ds, size = image_read.read_ray(spec, source)
        ds = ds.materialize()
        classes = image_read.check_classes([str(v) for v in ds.unique("label")], source)
        rows = ds.count()
        skipped: list[str] = []
        if spec.data.on_bad_file == "skip" and not spec.data.is_uri:
            # Ray Data dropped them in its tasks; count what went missing against the listing.
            local = image_read.source_kind(source, spec.data.format) == "folder"
            total = len(image_read.list_images(source)) if local else rows
            skipped = [f"{total - rows} files"] if total > rows else []
        layout = ImageLayout(classes, spec.data.image.mode, size, spec.data.image.mean, spec.data.image.std)
        fraction, seed = spec.split.valid_fraction, spec.split.seed
        to_index = image_read.LabelIndex(classes)
        train = ds.map_batches(SplitFilter(["key"], fraction, seed, valid=False, keep_all=True), batch_format="pandas")
        valid = ds.map_batches(SplitFilter(["key"], fraction, seed, valid=True, keep_all=True), batch_format="pandas")
        train = train.map_batches(to_index, batch_format="pandas")
        valid = valid.map_batches(to_index, batch_format="pandas")
        if spec.data.shuffle == "blocks":
            train = train.randomize_block_order(seed=seed)
        elif spec.data.shuffle == "rows":
            train = train.random_shuffle(seed=seed)
        train, valid = train.materialize(), valid.materialize()
        if train.count() == 0 or valid.count() == 0:
            raise DataError(f"split.valid_fraction={fraction} leaves no train or no valid images in {source}")
        return Prepared(
            config=_config(spec, layout),
            fingerprint=_fingerprint(source, layout, rows, len(skipped)),
            rows=rows,
            datasets={"train": train, "valid": valid},
            seconds=time.perf_counter() - start,
            skipped=skipped,
        )

    # ---------------------------------------------------------------------- batch inference
    def modest(self, spec: Spec, source: str | None) -> bool:
        path, declared = input_source(spec, source)
        if "://" in path:
            return False
        if image_read.source_kind(path, declared) == "parquet":
            return (local_schema(path, "parquet")[1] or 0) <= LOCAL_MAX_IMAGES
        return len(image_read.list_images(path)) <= LOCAL_MAX_IMAGES

    def local_batches(
        self, spec: Spec, meta: Mapping[str, Any], source: str | None, rows: int, *, label: str | None = None
    ) -> Iterator[pd.DataFrame]:
        """Decoded images with the columns the Ray reader gives them (``image``, ``label``, ``key``, ``path``)."""
        path, declared = input_source(spec, source)
        mode, skip = spec.data.image.mode, spec.data.on_bad_file == "skip"
        size = layout_of(meta).size
        blobs: list[bytes | None]
        if image_read.source_kind(path, declared) == "parquet":
            names, blobs, labels, keys = image_read.parquet_images(spec, path)
            columns: dict[str, list[str]] = {"label": labels, "key": keys}
        else:
            names = image_read.list_images(path)
            if not names:
                raise DataError(f"{path}: no image files ({', '.join(image_read.EXTENSIONS)})")
            blobs = [None] * len(names)
            columns = {
                "label": [image_read.class_of(n) for n in names],
                "key": [image_read.key_of(n) for n in names],
                "path": names,
            }
        load = image_read.FileDecoder(names, blobs, mode, size, skip=skip)
        frame = pd.DataFrame(columns)
        if source is None:
            frame = frame[key_mask(frame["key"].tolist(), spec.split.valid_fraction, spec.split.seed)]
        chunks = [frame.iloc[start : start + rows] for start in range(0, len(frame), rows)]

        def decode_all(chunk: pd.DataFrame) -> list[np.ndarray | None]:
            return [load(i) for i in chunk.index]

        # One thread decodes the next chunk while the caller runs this one's forward pass (torch
        # leaves the GIL); one, not one per core: small images decode mostly in Python, under the GIL.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(decode_all, chunks[0]) if chunks else None
            for k, chunk in enumerate(chunks):
                assert pending is not None
                decoded = pending.result()
                pending = pool.submit(decode_all, chunks[k + 1]) if k + 1 < len(chunks) else None
                kept = [i for i, a in enumerate(decoded) if a is not None]
                out = chunk.iloc[kept].copy()
                out.insert(0, "image", [decoded[i] for i in kept])
                yield out

    def ray_input(
        self, spec: Spec, meta: Mapping[str, Any], source: str | None, *, label: str | None = None
    ) -> ray.data.Dataset:
        """Decoded at the model's input size whatever size the files are."""
        path, declared = input_source(spec, source)
        size = layout_of(meta).size
        if source is not None:
            only_files = spec.model_copy(
                update={"data": spec.data.model_copy(update={"format": declared, "shuffle": "none"})}
            )
            return image_read.read_ray(only_files, path, size=size)[0]
        ds, _ = image_read.read_ray(spec, path, size=size)
        fraction, seed = spec.split.valid_fraction, spec.split.seed
        return ds.map_batches(SplitFilter(["key"], fraction, seed, valid=True, keep_all=True), batch_format="pandas")

    def target(self, meta: Mapping[str, Any]) -> Target:
        # An image classifier seen as a table: the pixels are its one feature, the folder its label.
        return Target("label", "multiclass", list(layout_of(meta).classes))

    # ------------------------------------------------------------------------------ serving
    def request_model(self, meta: Mapping[str, Any]) -> type[BaseModel]:
        return image_request.request_model(layout_of(meta))

    def output_model(self, meta: Mapping[str, Any]) -> type[BaseModel]:
        return image_request.output_model(layout_of(meta))

    def decode_request(self, body: Any, meta: Mapping[str, Any]) -> list[Any]:
        """Each image decoded and checked; a bad one raises DataError naming it (image.<i>)."""
        return list(decode_request(body.image, layout_of(meta)))

    def describe(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        layout = layout_of(meta)
        return {"images": layout.describe(), "classes": layout.classes}

    def page_fields(self, meta: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        return None  # the page draws on a canvas

    def compatible(self, served: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
        ours, theirs = layout_of(served), layout_of(other)
        if (theirs.mode, theirs.size, theirs.mean, theirs.std) != (ours.mode, ours.size, ours.mean, ours.std):
            return f"takes {theirs.describe()} images; this service decodes {ours.describe()}"
        return None

    def tensor_inputs(self, meta: Mapping[str, Any]) -> list[TensorMeta]:
        """``image``: 0-255 values, channel-first (``[n, H, W]`` too for grayscale), any number type."""
        layout = layout_of(meta)
        h, w = layout.size
        return [TensorMeta("image", "UINT8", (-1, layout.channels, h, w), tensors.NUMBERS)]

    def tensor_outputs(self, meta: Mapping[str, Any]) -> list[TensorMeta]:
        return tensors.prediction_outputs("multiclass", layout_of(meta).classes)

    def from_tensors(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> list[Any]:
        images = arrays["image"]
        if len(images) > image_request.MAX_IMAGES:
            raise DataError(f"{len(images)} images in one request, over the limit of {image_request.MAX_IMAGES}")
        if images.dtype != np.uint8:
            if not np.isfinite(images).all() or images.min() < 0 or images.max() > 255:
                raise DataError("input 'image': pixel values must be numbers from 0 to 255")
            images = np.rint(images).astype(np.uint8)
        return list(images)

    def to_tensors(self, results: list[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return tensors.prediction_tensors(results, self.tensor_outputs(meta), layout_of(meta).classes)

    # -------------------------------------------------------------------------------- drift
    def profile(self, frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Per-image mean intensity and ink fraction (``image_drift``), and the class balance."""
        return image_drift.image_profile(frame, layout_of(meta))

    def drift_values(self, items: list[Any], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return image_drift.image_values(items)

    def frame_drift_values(self, frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return image_drift.frame_values(frame)
