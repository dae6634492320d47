"""Every rayline model as an MLflow model: a pyfunc with rayline's own predictor inside.

A run's ``model/`` artifact is an MLflow model folder: ``MLmodel`` (the ``python_function``
flavour with ``loader_module: rayline.mlflow_model``), the checkpoint as its data
(``model/checkpoint``), a signature, an input example and the environment files. No object is
pickled: MLflow imports this module and calls ``_load_pyfunc(<model>/checkpoint)``, which loads
the family's predictor from the checkpoint as ``rayline predict`` does (scaling, categories,
classes all come from the checkpoint), so rayline must be installed where the model loads
(``--env-manager local``).

The pyfunc takes a DataFrame:

- tables: the feature columns, as in the training data (extra columns are ignored);
- images: one column ``image`` holding each image as encoded PNG/JPEG bytes (over JSON, as
  ``mlflow models serve`` takes it, a base64 string: MLflow decodes a binary column itself),
  decoded to the model's mode and size as ``rayline predict`` decodes image files;

and returns the columns ``rayline predict`` adds: ``prediction`` (regression), or
``predicted_label`` and ``probability`` (the predicted class's; for binary tables P(second
class)), plus ``probabilities`` (every class's, in the model's class order: a list per row)
for multiclass tables and images.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline._version import __version__
from rayline.checkpoints import read_meta
from rayline.data import get_kind
from rayline.errors import DataError
from rayline.families import Predictor, get_family

DATA_DIR = "checkpoint"  # the checkpoint's folder inside the MLflow model
EXAMPLE_ROWS = 3  # rows of the input example stored with the model
SCHEMA_ROWS = 500  # rows the signature's input types are inferred from
IMAGE_COLUMN = "image"


class RaylinePyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: the checkpoint's family predictor and its inputs."""

    def __init__(self, checkpoint: Path) -> None:
        from rayline.runtime import local_cpus

        self.meta = read_meta(checkpoint)
        self.kind = get_kind(self.meta["data_kind"])
        self.images = self.meta["data_kind"] == "images"
        self.request = self.kind.request_model(self.meta)
        self.predictor: Predictor = get_family(self.meta["family"]).load(checkpoint, cpus=local_cpus())

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Prediction columns for each input row; a bad row is MLflow's 400 (INVALID_PARAMETER_VALUE)."""
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        try:
            batch = self._decoded(frame.reset_index(drop=True))
            out = self.predictor.predict(batch)
        except DataError as err:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(err.message, error_code=INVALID_PARAMETER_VALUE) from None
        if "probabilities" in out.columns:
            # numpy arrays in cells: JSON (serving) and pandas consumers get plain lists of floats.
            out["probabilities"] = [np.asarray(p, dtype=np.float64).tolist() for p in out["probabilities"]]
        return out

    def _decoded(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Tables as they are (the predictor types and scales them); images decoded, one by one,
        as ``POST /predict`` decodes a base64 image (the data kind's request decoding)."""
        if not self.images:
            return frame
        from pydantic import ValidationError

        if IMAGE_COLUMN not in frame.columns:
            raise DataError(f"input has no {IMAGE_COLUMN!r} column (encoded PNG/JPEG bytes, one image per row)")
        arrays = []
        for i, value in enumerate(frame[IMAGE_COLUMN]):
            if isinstance(value, bytes | bytearray):
                value = base64.b64encode(value).decode("ascii")
            if not isinstance(value, str):
                raise DataError(f"{IMAGE_COLUMN}.{i}: expected encoded PNG/JPEG bytes, got {type(value).__name__}")
            if not value:
                raise DataError(f"{IMAGE_COLUMN}.{i}: the image is empty")
            try:
                body = self.request.model_validate({IMAGE_COLUMN: [value]})
            except ValidationError as err:
                raise DataError(f"{IMAGE_COLUMN}.{i}: {err.errors()[0]['msg']}") from None
            try:
                (array,) = self.kind.decode_request(body, self.meta)
            except DataError as err:  # it names the image by its place in a one-image body
                raise DataError(f"{IMAGE_COLUMN}.{i}: {err.message.split(': ', 1)[-1]}") from None
            arrays.append(array)
        return pd.DataFrame({IMAGE_COLUMN: arrays})


def _load_pyfunc(data_path: str) -> RaylinePyfunc:
    """MLflow's entry point for ``loader_module`` models: ``data_path`` is ``<model>/checkpoint``."""
    return RaylinePyfunc(Path(data_path))


def model_inputs(rows: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """Training rows (as the data kind holds them) as the pyfunc takes them."""
    if meta["data_kind"] == "images":
        from PIL import Image

        def png(array: np.ndarray) -> bytes:
            plane = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)  # [C, H, W] -> PIL's
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(plane, dtype=np.uint8)).save(buf, format="PNG")
            return buf.getvalue()

        return pd.DataFrame({IMAGE_COLUMN: [png(np.asarray(a)) for a in rows[IMAGE_COLUMN]]})
    features = list(meta["layout"]["features"])
    return rows[features].reset_index(drop=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's INFO line ("Validating input example against model signature") and its hint about
    integer columns, on every run and trial, say nothing to a rayline user."""
    loggers = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.models")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def save(checkpoint: Path, rows: pd.DataFrame, target: Path) -> Path:
    """Write the MLflow model of ``checkpoint`` at ``target`` (which must not exist); returns it.

    ``rows``: a few training rows, as the data kind holds them: the signature's input types and
    the input example come from them, and the example's predictions (made here, through the
    pyfunc, as MLflow will make them) give the output types. The requirements are written, not
    inferred: MLflow's inference starts a process that imports the model, every trial of a tune.
    """
    import mlflow.pyfunc
    from mlflow.models import Model, infer_signature

    meta = read_meta(checkpoint)
    take = SCHEMA_ROWS if meta["data_kind"] != "images" else EXAMPLE_ROWS
    inputs = model_inputs(rows.head(take), meta)
    example = inputs.head(EXAMPLE_ROWS)
    outputs = RaylinePyfunc(checkpoint).predict(example)
    with tempfile.TemporaryDirectory(prefix="rayline-no-uv-") as no_uv, _quiet():
        # A whole-number column is MLflow's ``long``, as the training data holds it (MLflow then
        # refuses a missing value there; a double column would refuse whole numbers).
        mlflow.pyfunc.save_model(
            str(target),
            loader_module=__name__,
            signature=infer_signature(inputs, outputs),
            input_example=example,
            pip_requirements=[f"rayline=={__version__}"],
            # Not the working directory's uv.lock and pyproject.toml: they say nothing about the model.
            uv_project_path=no_uv,
            metadata={"rayline_family": meta["family"], "rayline_data_kind": meta["data_kind"]},
        )
    # The checkpoint sits at model/checkpoint (save_model's data_path would nest it in data/).
    shutil.copytree(checkpoint, target / DATA_DIR)
    mlmodel = Model.load(str(target / "MLmodel"))
    mlmodel.flavors["python_function"]["data"] = DATA_DIR
    mlmodel.save(str(target / "MLmodel"))
    return target
