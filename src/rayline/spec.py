"""The declarative spec: pydantic models, YAML loading and ``--set`` overrides.

A spec is validated whole before anything distributed starts, so a typo fails in
milliseconds with the file, the field path and what was expected, not minutes into a run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from rayline import plugins
from rayline.errors import SpecError
from rayline.modelspec import ModelSpec, Strict

BUILTIN_SOURCES = ("builtin:taxi", "builtin:mnist")
TAXI_S3_URI = "s3://anonymous@anyscale-training-data/intro-to-ray-air/nyc_taxi_2021.parquet"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


_Strict = Strict


# ----------------------------------------------------------------------------------- data
class ImageSpec(_Strict):
    """How images are decoded and normalized (image sources only)."""

    mode: Literal["L", "RGB"] = "L"
    size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = Field(
        default=None, description="(height, width) to resize to; None keeps the size of the images"
    )
    mean: float = 0.5
    std: Annotated[float, Field(gt=0)] = 0.5


class DataSpec(_Strict):
    """Where the data comes from and which column is the label."""

    source: str = Field(
        description="builtin:taxi, builtin:mnist, a local path (parquet/CSV file or folder, image "
        "folder) or a URI such as s3://bucket/key; relative paths resolve against the working directory"
    )
    format: Literal["auto", "parquet", "csv", "images"] = "auto"
    label: str | None = Field(
        default=None, description="label column of a table; image folders take it from the parent folder"
    )
    features: list[str] | None = Field(default=None, description="feature columns; default: all but label")
    categorical: Literal["auto"] | list[str] = Field(
        default="auto",
        description="feature columns treated as categories: auto (every text column) or a list (exactly those; "
        "[] for none)",
    )
    scale: list[str] = Field(default_factory=list, description="columns MinMax-scaled, fitted on train only")
    rows: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="builtin:taxi only: how many trips to generate (default 200,000)"
    )
    seed: int = Field(default=0, description="builtin:taxi only: generator seed")
    image: ImageSpec = Field(default_factory=ImageSpec)
    shuffle: Literal["none", "files", "blocks", "rows"] = Field(
        default="none", description="Ray Data shuffle: input files, block order, or all rows globally"
    )
    on_bad_file: Literal["fail", "skip"] = "fail"

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a path, a URI or one of " + ", ".join(BUILTIN_SOURCES))
        if value.startswith("builtin:") and value not in BUILTIN_SOURCES:
            raise ValueError(f"unknown built-in dataset {value!r}; expected one of {', '.join(BUILTIN_SOURCES)}")
        return value

    @model_validator(mode="after")
    def _columns(self) -> DataSpec:
        if self.rows is not None and self.source != "builtin:taxi":
            raise ValueError(
                f"rows={self.rows} only applies to source builtin:taxi, not {self.source!r} (set data.rows to null:"
                " --set data.rows=null)"
            )
        if self.label is not None and self.features is not None and self.label in self.features:
            raise ValueError(f"label {self.label!r} is also listed in features")
        return self

    @property
    def is_uri(self) -> bool:
        return bool(_URI.match(self.source))


class SplitSpec(_Strict):
    valid_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    seed: int = 42


# ---------------------------------------------------------------------------------- model
def _model_specs() -> tuple[type[ModelSpec], ...]:
    """Every registered family's section class (``rayline.plugins``), checked once at import."""
    found = []
    for name, target in plugins.families().items():
        cls = plugins.load(target)
        if not (isinstance(cls, type) and issubclass(cls, ModelSpec)):
            raise TypeError(f"family {name!r}: {target} is not a rayline.modelspec.ModelSpec")
        found.append(cls)
    return tuple(found)


MODEL_SPECS = _model_specs()
FAMILIES = tuple(typing.get_args(cls.model_fields["family"].annotation)[0] for cls in MODEL_SPECS)
if typing.TYPE_CHECKING:  # a type checker sees the base; families narrow it with isinstance
    AnyModelSpec = ModelSpec
else:
    AnyModelSpec = Annotated[Union[MODEL_SPECS], Field(discriminator="family")]  # noqa: UP007


class TrainSpec(_Strict):
    report_every: Annotated[int, Field(gt=0)] = Field(
        default=10,
        description="rounds (tree families) or epochs (neural networks) between metric reports and checkpoints",
    )
    timeout_s: Annotated[float, Field(gt=0)] = 3600.0
    stall_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=600.0,
        description="a Ray Train run or a search fails when no worker or trial has read, trained or "
        "reported for this long (workers a busy cluster never starts, a hung step)",
    )


class ScalingSpec(_Strict):
    num_workers: Literal["auto"] | Annotated[int, Field(gt=0)] = Field(
        default="auto", description="auto: one in-process worker for small data, Ray Train workers for big data"
    )
    cpus_per_worker: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="default: the CPUs Ray has, divided among workers"
    )
    use_gpu: bool = Field(
        default=False,
        description="train on GPUs: in-process on CUDA, or each Ray Train worker on its share; "
        "workers sharing a GPU all-reduce with gloo (NCCL refuses two ranks on one GPU)",
    )
    gpus_per_worker: Annotated[float, Field(gt=0)] = Field(
        default=1.0, description="with use_gpu: each worker's (and each Tune trial's) share of a GPU, e.g. 0.5"
    )
    placement: Literal["spread", "pack"] = Field(
        default="spread",
        description="Ray Train workers on a multi-node cluster: spread over the nodes (each worker gets a "
        "node's CPUs and memory) or packed onto as few as fit; one node: no difference",
    )
    max_failures: Annotated[int, Field(ge=-1)] = Field(
        default=1,
        description="Ray Train runs: worker failures (a killed or crashed worker, or an error raised in the "
        "training loop) recovered from the last checkpoint before the run fails; 0: none, -1: no limit",
    )

    @property
    def workers(self) -> int:
        """Workers one training run takes (``auto``: one, in process or on Ray Train)."""
        return 1 if self.num_workers == "auto" else int(self.num_workers)


# ----------------------------------------------------------------------------------- tune
class SearchDomain(_Strict):
    """Exactly one of: randint [low, high), uniform [low, high], loguniform [low, high], choice [...]."""

    randint: tuple[int, int] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None
    choice: Annotated[list[Any], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one(self) -> SearchDomain:
        given = [k for k in ("randint", "uniform", "loguniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of randint, uniform, loguniform, choice (got {given or 'none'})")
        for key in ("randint", "uniform", "loguniform"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{key} needs low < high, got [{bounds[0]}, {bounds[1]}]")
        return self


class TuneSpec(_Strict):
    num_samples: Annotated[int, Field(gt=0)] = 4
    scheduler: Literal["fifo", "asha"] = "fifo"
    max_concurrent: Literal["auto"] | Annotated[int, Field(gt=0)] = "auto"
    space: dict[str, SearchDomain] = Field(default_factory=dict)


# -------------------------------------------------------------------------------- predict
Precision = Literal["float32", "bfloat16"]
_PRECISION = (
    "arithmetic of neural-network families: bfloat16 is faster on CPUs with AVX512-BF16 and slower "
    "without (docs/benchmarks.md); tree families ignore it"
)


class PredictSpec(_Strict):
    batch_size: Annotated[int, Field(gt=0)] | None = Field(default=None, description="default: family's choice")
    concurrency: Annotated[int, Field(gt=0)] | tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] = Field(
        default=1, description="actor pool size, or [min, max] for an autoscaling pool"
    )
    num_cpus: Annotated[float, Field(gt=0)] = 1.0
    num_gpus: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="each actor's share of a GPU (e.g. 0.25); its model then runs on CUDA"
    )
    precision: Precision = Field(default="float32", description=_PRECISION)
    input: str | None = Field(default=None, description="default: the validation split of data.source")
    output: str | None = Field(default=None, description="default: RAYLINE_HOME/predictions/<name>/<run>.parquet")
    timeout_s: Annotated[float, Field(gt=0)] = 3600.0
    stall_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=300.0,
        description="the actor pool fails when none of its actors has predicted a batch for this long",
    )
    engine: Literal["auto", "local", "ray"] = Field(
        default="auto",
        description="auto: in this process for a modest local table or image folder on the embedded Ray "
        "(starting Ray and the actor pool would cost more than the work), a Ray Data actor pool otherwise",
    )
    on_bad_row: Literal["fail", "skip", "quarantine"] = Field(
        default="fail",
        description="tables: a row POST /predict would refuse (text for a number, a non-finite or missing "
        "number...): fail the job, skip it, or quarantine it (written to <output>.quarantine.parquet with its "
        "file, row number and reason)",
    )
    part_rows: Annotated[int, Field(gt=0)] = Field(
        default=1_000_000,
        description="tables: the most rows per output part file (row groups are kept whole; a sixteenth of the "
        "table when that is less); a killed job resumes (--resume) from its last finished part",
    )

    @field_validator("concurrency")
    @classmethod
    def _pool(cls, value: int | tuple[int, int]) -> int | tuple[int, int]:
        if isinstance(value, tuple) and value[0] > value[1]:
            raise ValueError(f"[min, max] needs min <= max, got [{value[0]}, {value[1]}]")
        return value


# ---------------------------------------------------------------------------------- serve
class AutoscalingSpec(_Strict):
    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(gt=0)] = 2
    initial_replicas: Annotated[int, Field(ge=0)] | None = None
    target_ongoing_requests: Annotated[float, Field(gt=0)] = 8.0
    upscale_delay_s: Annotated[float, Field(ge=0)] = 5.0
    downscale_delay_s: Annotated[float, Field(ge=0)] = 30.0
    metrics_interval_s: Annotated[float, Field(gt=0)] = 2.0
    look_back_period_s: Annotated[float, Field(gt=0)] = 10.0

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        initial = self.initial_replicas
        if initial is not None and not self.min_replicas <= initial <= self.max_replicas:
            raise ValueError(
                f"initial_replicas={initial} is outside [min_replicas={self.min_replicas}, "
                f"max_replicas={self.max_replicas}]"
            )
        return self


class CanarySpec(_Strict):
    """A share of the requests that name no model goes to another model of the spec (``--canary``)."""

    model: str = Field(description="alias or run id that answers the canary share (e.g. challenger)")
    percent: Annotated[float, Field(gt=0, le=100)] = Field(
        default=10.0, description="share of requests, sticky per X-Route-Key header when one is sent"
    )


class CaptureSpec(_Strict):
    """Requests and answers written to storage as parquet files (docs/serving.md, Capture)."""

    path: str = Field(description="a folder, or an object store URI (s3://bucket/prefix), the files go to")
    fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.1, description="share of requests captured (by request id: a shadow answer with its request)"
    )
    max_file_mb: Annotated[float, Field(gt=0)] = Field(
        default=64.0, description="a file is written once the rows held pass this size"
    )
    max_file_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="a file is also written once the oldest row held is this old (seconds)"
    )
    max_queue_mb: Annotated[float, Field(gt=0)] = Field(
        default=64.0,
        description="requests waiting to be written, per replica; past it a request is not captured (counted)",
    )


class ServeSpec(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = Field(default=8000, description="0 picks a free port")
    grpc_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        default=None,
        description="also answer the Open Inference Protocol over gRPC on this port (0 picks a free one); "
        "none: HTTP only",
    )
    num_replicas: Annotated[int, Field(gt=0)] | None = Field(default=None, description="fixed replicas (default 1)")
    autoscaling: AutoscalingSpec | None = None
    num_cpus: Annotated[float, Field(gt=0)] = 0.5
    num_gpus: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="each model replica's share of a GPU (e.g. 0.5); its model then runs on CUDA"
    )
    precision: Precision = Field(default="float32", description=_PRECISION)
    max_batch_size: Annotated[int, Field(gt=0)] = 32
    batch_wait_timeout_s: Annotated[float, Field(ge=0)] = 0.0
    max_ongoing_requests: Annotated[int, Field(gt=0)] = 64
    max_queued_requests: Annotated[int, Field(gt=0)] = Field(
        default=128,
        description="requests a replica holds waiting while max_ongoing_requests are being answered; when "
        "every replica's queue is full a request is refused at once with 429 and Retry-After, not held",
    )
    retry_after_s: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="the Retry-After (seconds, rounded up) of a 429 answered for a full queue"
    )
    max_request_bytes: Annotated[int, Field(gt=0)] = 8 * 1024 * 1024
    ingress: Literal["haproxy", "proxy", "direct"] = Field(
        default="haproxy",
        description="haproxy: HAProxy load-balances replicas that serve HTTP themselves (fastest); "
        "proxy: Ray Serve's Python proxy; direct: replicas on their own ports for an external balancer",
    )
    topology: Literal["auto", "composed", "fused"] = Field(
        default="auto",
        description="image models: composed puts a preprocessor deployment in front of the model (the "
        "course's composition: decoding scales apart from model replicas that hold GPUs); fused decodes "
        "in the model replica (one hop fewer); auto: composed when model replicas hold GPUs, else fused",
    )
    api_key_env: str | None = Field(
        default=None, description="name of an env var holding an API key required on /predict (Bearer token)"
    )
    api_key_file: str | None = Field(
        default=None, description="a file holding the API key (a mounted secret); wins over api_key_env"
    )
    docs_auth: bool = Field(
        default=True,
        description="with an API key set, /docs, /openapi.json and the page need it too (a browser asks for "
        "it as a password); false leaves them open. /healthz is always open",
    )
    canary: CanarySpec | None = Field(
        default=None, description="send a share of requests to another model of the spec (--canary MODEL:PERCENT)"
    )
    shadow: str | None = Field(
        default=None,
        description="alias or run id that also answers every request in the background; its answers are "
        "compared with the served model's (agreement in /healthz), never returned (--shadow MODEL)",
    )
    alias_poll_s: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="how often a service started with aliases checks where they point now"
    )
    capture: CaptureSpec | None = Field(
        default=None,
        description="write a share of the requests and answers to parquet files (off by default): "
        "--set serve.capture.fraction=1.0 --set serve.capture.path=DIR",
    )
    access_log: bool = Field(
        default=False,
        description="Ray Serve's per-request access log in the replicas' log files (off by default: it "
        "costs CPU on every request)",
    )

    @model_validator(mode="after")
    def _replicas(self) -> ServeSpec:
        if self.autoscaling is not None and self.num_replicas is not None:
            raise ValueError(f"set either num_replicas={self.num_replicas} or autoscaling, not both")
        return self


# ----------------------------------------------------------------------------------- root
class Spec(_Strict):
    """A whole workload: data -> split -> model -> train -> tune -> predict -> serve."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    data: DataSpec
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: AnyModelSpec
    metric: str = Field(default="valid_loss", description="metric that picks the best run and tune trial")
    mode: Literal["min", "max"] = "min"
    train: TrainSpec = Field(default_factory=TrainSpec)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    predict: PredictSpec = Field(default_factory=PredictSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)

    @model_validator(mode="after")
    def _cross(self) -> Spec:
        family, wants = self.model.family, self.model.data_kind
        builtin = {"builtin:taxi": "table", "builtin:mnist": "images"}.get(self.data.source)
        if builtin is not None and builtin != wants:
            raise ValueError(f"model.family {family} learns from {wants}; {self.data.source} is {builtin}")
        if self.data.format == "images" and wants != "images":
            raise ValueError(f"model.family {family} learns from {wants}, but data.format is images")
        return self

    def fingerprint(self) -> str:
        """Stable hash of the validated spec (defaults included), for lineage tags."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------- loading
def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a section, it is {child!r}")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value); the value is read as YAML (``2``, ``[2, 8]``, ``true``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise SpecError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. --set model.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _format_errors(origin: str, err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False):
        # Drop the union tag pydantic inserts (model.xgboost.x -> model.x): users never write it.
        loc = [str(p) for p in item["loc"] if p not in FAMILIES and not str(p).startswith("function-")]
        where = ".".join(loc) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif item["type"] == "union_tag_invalid":
            family = item.get("ctx", {}).get("tag", item["input"])
            msg = f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}"
        elif item["type"] == "union_tag_not_found":
            msg = f"missing 'family'; expected one of {', '.join(FAMILIES)}"
        parts.append(f"{where}: {msg}")
    return f"{origin}: " + "; ".join(parts)


def _absolutize(raw: dict[str, Any]) -> None:
    """Relative local paths become absolute now: Ray workers run with another working directory."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        src = data["source"].strip()
        if src and not src.startswith("builtin:") and not _URI.match(src):
            data["source"] = str(Path(os.path.expanduser(src)).resolve())
    capture = raw.get("serve", {}).get("capture") if isinstance(raw.get("serve"), dict) else None
    if isinstance(capture, dict) and isinstance(capture.get("path"), str) and not _URI.match(capture["path"]):
        capture["path"] = str(Path(os.path.expanduser(capture["path"])).resolve())
    predict = raw.get("predict")
    if isinstance(predict, dict):
        for key in ("input", "output"):
            val = predict.get(key)
            if isinstance(val, str) and val and not _URI.match(val):
                predict[key] = str(Path(os.path.expanduser(val)).resolve())


def _override_list(overrides: object) -> list[str]:
    """``overrides`` as a list, or a TypeError: a lone str would otherwise be walked character by character."""
    if isinstance(overrides, str | bytes) or not isinstance(overrides, Iterable):
        raise TypeError(f"overrides must be a list of 'KEY.PATH=VALUE' strings, got {type(overrides).__name__}")
    items = list(overrides)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"overrides must be a list of 'KEY.PATH=VALUE' strings, got a {type(item).__name__} in it")
    return items


def spec_from_dict(raw: Mapping[str, Any], overrides: Iterable[str] = (), *, origin: str = "spec") -> Spec:
    """Validate a spec given as a mapping; ``origin`` names it in error messages."""
    if not isinstance(raw, Mapping):
        hint = "; for a file use rayline.load_spec(path)" if isinstance(raw, str | os.PathLike) else ""
        raise TypeError(
            f"rayline.spec_from_dict expects a mapping (a dict, as parsed from YAML), got {type(raw).__name__}{hint}"
        )
    texts = _override_list(overrides)
    tree: dict[str, Any] = json.loads(json.dumps(raw, default=str))  # deep copy, plain types
    for text in texts:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    _absolutize(tree)
    try:
        return Spec.model_validate(tree)
    except ValidationError as err:
        raise SpecError(_format_errors(origin, err)) from None


def load_spec(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Spec:
    """Read a YAML spec, apply ``--set`` overrides, validate. Raises SpecError naming file and field."""
    if not isinstance(path, str | os.PathLike):
        hint = "; for a dict use rayline.spec_from_dict(d)" if isinstance(path, Mapping) else ""
        raise TypeError(f"rayline.load_spec expects a path (str or os.PathLike), got {type(path).__name__}{hint}")
    overrides = _override_list(overrides)  # checked before the file is read: a wrong type is not a spec problem
    file = Path(path)
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "not found"
        raise SpecError(f"spec file {str(file)!r} {what}", hint="pass the path to a .yaml spec")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{file}:{line} invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{file}: not a UTF-8 text file") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{file}: expected a mapping at the top level (name:, data:, model:, ...)")
    return spec_from_dict(raw, overrides, origin=str(file))
