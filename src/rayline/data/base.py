"""The data-kind contract (a protocol) and what its readers hand the stages.

A stage never asks which kind of data it holds: it calls these methods on the kind that the
family declared. ``meta`` is a checkpoint's ``meta.json``: its ``layout`` is what the kind
wrote at training time (features and classes, or image size and classes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rayline.errors import DataError
from rayline.spec import Spec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import ray.data
    from pydantic import BaseModel

    from rayline.data.tensors import TensorMeta

Task = Literal["binary", "multiclass", "regression"]


@dataclass
class Prepared:
    """A split dataset, ready for a training loop on either engine.

    ``config`` is the loop's whole input besides the data (spec, layout, ...): the same dict
    drives an in-process run, a Tune trial and every Ray Train worker.
    """

    config: dict[str, Any]
    fingerprint: dict[str, Any]
    rows: int
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # in-process engine
    datasets: dict[str, ray.data.Dataset] = field(default_factory=dict)  # Ray engine
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # undecodable files left out (on_bad_file: skip)


@dataclass(frozen=True)
class Target:
    """What evaluation compares predictions with: the label column, the task, the classes by index."""

    label: str
    task: Task
    classes: list[Any]


class DataKind(Protocol):
    name: str
    output_drop: tuple[str, ...]  # input columns not written back beside predictions (pixels)

    # ----------------------------------------------------------------------------- training
    def fits_in_process(self, spec: Spec) -> bool:
        """Whether ``scaling.num_workers: auto`` can train on this data in one process."""

    def prepare_local(self, spec: Spec) -> Prepared:
        """Read, check and split in this process."""

    def prepare_ray(self, spec: Spec) -> Prepared:
        """Read, check and split with Ray Data (Ray must be running)."""

    # ---------------------------------------------------------------------- batch inference
    def modest(self, spec: Spec, source: str | None) -> bool:
        """Whether the rows to predict (``source``, or the validation split) are small enough for this process."""

    def local_batches(
        self, spec: Spec, meta: Mapping[str, Any], source: str | None, rows: int, *, label: str | None = None
    ) -> Iterator[pd.DataFrame]:
        """The rows to predict in batches of ``rows``, read here (``label``: must be present)."""

    def ray_input(
        self, spec: Spec, meta: Mapping[str, Any], source: str | None, *, label: str | None = None
    ) -> ray.data.Dataset:
        """The rows to predict as a Ray Dataset."""

    def target(self, meta: Mapping[str, Any]) -> Target:
        """The label and classes a checkpoint was trained on."""

    # ------------------------------------------------------------------------------ serving
    def request_model(self, meta: Mapping[str, Any]) -> type[BaseModel]:
        """The pydantic body of ``POST /predict`` (shown in /docs with the real fields)."""

    def output_model(self, meta: Mapping[str, Any]) -> type[BaseModel]:
        """One prediction as a serving response holds it (for the OpenAPI document)."""

    def decode_request(self, body: Any, meta: Mapping[str, Any]) -> list[Any]:
        """One item per record or image of a validated body; DataError names a bad one."""

    def describe(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """What /healthz shows about the inputs."""

    def page_fields(self, meta: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """One form field per input for the page at ``/``; None draws on a canvas instead."""

    def compatible(self, served: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
        """Why a checkpoint cannot answer requests decoded for the served one (None: it can)."""

    # ------------------------------------------------------- the Open Inference Protocol
    def tensor_inputs(self, meta: Mapping[str, Any]) -> list[TensorMeta]:
        """The model's inputs as named tensors (``rayline.data.tensors``)."""

    def tensor_outputs(self, meta: Mapping[str, Any]) -> list[TensorMeta]:
        """The model's answers as named tensors."""

    def from_tensors(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> list[Any]:
        """Checked input arrays (declared names, datatypes and shapes) -> items, as ``decode_request``
        makes them; DataError names a bad value."""

    def to_tensors(self, results: list[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``predict_items`` results -> one array per output of ``tensor_outputs``."""

    # -------------------------------------------------------------------------------- drift
    def profile(self, frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The drift profile of training rows (``rayline.data.drift_profile.Profile``, as a dict):
        stored as the checkpoint's ``profile.json``."""

    def drift_values(self, items: list[Any], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Each profiled feature's values for decoded serving items (what ``decode_request`` returns)."""

    def frame_drift_values(self, frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The same for rows in a frame (``local_batches``' batches, the training split)."""


def resolve_source(spec: Spec) -> str:
    """A readable path or URI for the spec's data (``builtin:`` sources are generated once)."""
    source = spec.data.source
    if source.startswith("builtin:"):
        from rayline.datasets import materialize
        from rayline.runtime import home

        return str(materialize(source, data_dir=home() / "data", rows=spec.data.rows, seed=spec.data.seed))
    if not spec.data.is_uri and not Path(source).exists():
        raise DataError(f"data.source {source} does not exist")
    return source


def input_source(spec: Spec, source: str | None) -> tuple[str, str]:
    """(path, declared format) of the rows to predict: ``--input`` as given, or the spec's data."""
    if source is None:
        return resolve_source(spec), spec.data.format
    if "://" not in source and not Path(source).exists():
        raise DataError(f"--input {source} does not exist")
    return source, "auto"
