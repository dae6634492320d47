"""The run registry, on MLflow tracking (the one module that talks to the tracking store;
``rayline.mlflow_model`` writes the MLflow model folders it stores).

Default store: embedded SQLite at ``RAYLINE_HOME/mlflow.db`` with artifacts in
``RAYLINE_HOME/mlartifacts``; ``MLFLOW_TRACKING_URI`` points it at the user's server instead.
One MLflow experiment per spec name. A run carries tags ``rayline.kind`` (train, tune, trial,
predict, evaluate), ``rayline.family``, ``rayline.spec_hash`` and ``rayline.model`` ("1" when it
has a model); tune trials are children of their tune run through MLflow's ``mlflow.parentRunId``
tag, so ``mlflow ui`` nests them.

A run's model is the MLflow model at the ``model/`` artifact path (tag ``rayline.model_path``:
``model``), its checkpoint folder inside it at ``model/checkpoint``; a registered version's
source is that MLflow model. Runs logged before models were MLflow models have the bare
checkpoint at ``checkpoint/`` (and no ``rayline.model_path`` tag): they still resolve, predict,
serve and promote (the version's source is then the checkpoint folder).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rayline.errors import RegistryError, StoreError, first_line

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from rayline.spec import Spec

TAG_KIND = "rayline.kind"
TAG_FAMILY = "rayline.family"
TAG_SPEC_HASH = "rayline.spec_hash"
TAG_MODEL = "rayline.model"
TAG_PARENT = "mlflow.parentRunId"
TAG_MODEL_PATH = "rayline.model_path"
CHECKPOINT_PATH = "checkpoint"  # a checkpoint folder's name: the artifact path of runs before MLflow models
MODEL_PATH = "model"  # the MLflow model's artifact path; the checkpoint is its CHECKPOINT_PATH folder
Selector = Literal["best", "latest"] | str
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class RunRecord:
    """A registered run, as read back from MLflow."""

    run_id: str
    experiment: str
    name: str
    kind: str
    family: str
    status: str
    start_time: datetime | None
    end_time: datetime | None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifact_uri: str = ""

    @property
    def parent_id(self) -> str | None:
        return self.tags.get(TAG_PARENT)

    @property
    def has_model(self) -> bool:
        return self.tags.get(TAG_MODEL) == "1"

    @property
    def model_path(self) -> str:
        """The artifact path a registered version points at: the MLflow model, or the bare
        checkpoint of a run logged before models were MLflow models."""
        return MODEL_PATH if self.tags.get(TAG_MODEL_PATH) == MODEL_PATH else CHECKPOINT_PATH

    @property
    def checkpoint_path(self) -> str:
        """The artifact path of the run's checkpoint folder."""
        return f"{MODEL_PATH}/{CHECKPOINT_PATH}" if self.model_path == MODEL_PATH else CHECKPOINT_PATH

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time).total_seconds()


@dataclass(frozen=True)
class VersionRecord:
    """A version of a spec's registered model: the run it holds and the aliases pointing at it."""

    model: str
    version: int
    run_id: str
    aliases: tuple[str, ...]
    created: datetime | None


HEX = re.compile(r"[0-9a-f]+")  # what a run id (MLflow's uuid hex) or its prefix looks like
ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
RESERVED_ALIASES = ("best", "latest")


def headline_keys(values: Mapping[str, float], prefix: str = "valid_") -> list[str]:
    """The metrics worth a glance, in order: the loss first (every family reports it alike), the
    rest by name; the error rate is left out (it only repeats the accuracy)."""
    loss = f"{prefix}loss"
    return sorted((k for k in values if k.startswith(prefix) and k != f"{prefix}error"), key=lambda k: (k != loss, k))


def check_alias(alias: str) -> str:
    """An alias a user may set: a name MLflow accepts that no selector or version reads as."""
    if not ALIAS.fullmatch(alias) or alias in RESERVED_ALIASES or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryError(
            f"alias {alias[:80]!r} is not usable: expected letters, digits, _ or -, starting with a letter, "
            f"and not {', '.join(RESERVED_ALIASES)} or v<number>"
        )
    return alias


def default_tracking_uri(home: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"


def _ts(ms: int | None) -> datetime | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _clean(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's param value limit


def _quoted(name: str) -> str:
    """A name inside a filter string's single quotes (spec names allow no quote, but be safe)."""
    return name.replace("'", "''")


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = _clean(value)
    return flat


class Absent(RegistryError):
    """MLflow answered that the run, registered model, alias or artifact asked for does not exist:
    the one registry error a reader may take as "none"."""


def _not_found(err: BaseException) -> bool:
    """MLflow's ``RESOURCE_DOES_NOT_EXIST``: from SQLite, a tracking server's 404 body, and its
    artifact repositories (a missing artifact); nothing else means absent."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and err.error_code == "RESOURCE_DOES_NOT_EXIST"


@contextmanager
def mlflow_errors(doing: str, store: str, *, missing: RegistryError | None = None) -> Iterator[None]:
    """MLflow's errors inside the block as one ``StoreError`` (a ``RegistryError``) that names the
    operation and the store: ``could not <doing> (registry at <store>): <MLflow's first line>``.

    Only MLflow's "does not exist" may read as absent: it raises ``missing`` when given, else
    ``Absent``. A store that is down, refuses, or is broken raises the operation's error, never
    "none" (a tracking server that did not answer once read as a run without spec.yaml).
    """
    try:
        yield
    except RegistryError:
        raise
    except Exception as err:
        if _not_found(err):
            raise (missing or Absent(f"could not {doing}: {first_line(err)}")) from err
        raise StoreError(f"could not {doing} (registry at {store}): {first_line(err)}") from err


class ActiveRun:
    """A run being written. Metrics are buffered and sent in batches."""

    def __init__(self, client: MlflowClient, run_id: str, *, store: str) -> None:
        self._client = client
        self.run_id = run_id
        self._store = store
        self._pending: list[Any] = []
        self._step = 0
        self._history = False
        self._final_step: int | None = None
        self.failed = False  # set to end the run FAILED without raising (a failed tune trial)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _flatten(params).items()]
        with mlflow_errors(f"log the params of run {self.run_id}", self._store):
            for i in range(0, len(items), 100):
                self._client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _clean(v)) for k, v in tags.items()]
        with mlflow_errors(f"tag run {self.run_id}", self._store):
            self._client.log_batch(self.run_id, tags=items, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Queue metrics (sent on ``flush`` or when the run ends).

        Without ``step`` they are final values: they land one step after any history, so they
        are what MLflow shows as the run's metric (it reports the value at the largest step).
        """
        from mlflow.entities import Metric

        if step is None:
            if self._final_step is None:
                self._final_step = self._step + 1 if self._history else 0
            step = self._final_step
        else:
            step = int(step)
            self._step, self._history = max(self._step, step), True
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is None:
                continue
            self._pending.append(Metric(key, float(value), now, step))
        if len(self._pending) >= _BATCH:
            self.flush()

    def log_history(self, rows: Iterable[Mapping[str, float]], step_key: str) -> None:
        """Queue a metric history: one mapping per step, the step number under ``step_key``."""
        for row in rows:
            step = int(row[step_key])
            self.log_metrics({k: v for k, v in row.items() if k != step_key}, step=step)

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
            with mlflow_errors(f"log the metrics of run {self.run_id}", self._store):
                self._client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def log_text(self, text: str, artifact_file: str) -> None:
        with mlflow_errors(f"store {artifact_file} of run {self.run_id}", self._store):
            self._client.log_text(self.run_id, text, artifact_file)

    def log_dir(self, local_dir: str | os.PathLike[str], artifact_path: str) -> None:
        with mlflow_errors(f"store {artifact_path}/ of run {self.run_id}", self._store):
            self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_model(self, model_dir: str | os.PathLike[str]) -> None:
        """Store an MLflow model folder (``MLmodel``, the checkpoint in its ``checkpoint/``:
        ``rayline.mlflow_model.save`` writes one); marks the run as servable (``--model``)."""
        self.log_dir(model_dir, MODEL_PATH)
        self.set_tags({TAG_MODEL: "1", TAG_MODEL_PATH: MODEL_PATH})

    def log_checkpoint(self, local_dir: str | os.PathLike[str]) -> None:
        """Store a bare checkpoint folder at ``checkpoint/``, as runs were logged before models
        were MLflow models (and still are when no MLflow model could be written for one)."""
        self.log_dir(local_dir, CHECKPOINT_PATH)
        self.set_tags({TAG_MODEL: "1"})


REACH_TIMEOUT_S = 10.0


def check_reachable(uri: str) -> None:
    """Fail in seconds, naming the server, when a tracking server does not answer at all: MLflow's
    own retries with backoff would sit silent for minutes first. Any HTTP answer will do (a proxy
    may want credentials for /health); TLS questions are left to MLflow, which knows its settings."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S)
    except requests.exceptions.SSLError:
        return
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        timed_out = isinstance(err, requests.exceptions.Timeout)
        reason = f"no answer within {REACH_TIMEOUT_S:g} s" if timed_out else "connection refused"
        raise StoreError(
            f"cannot reach the MLflow tracking server at {uri}: {reason}",
            hint="check MLFLOW_TRACKING_URI, or unset it to use the local registry",
        ) from None


class Registry:
    """Runs of every spec, read and written through one ``MlflowClient``."""

    def __init__(self, home: Path, tracking_uri: str | None = None) -> None:
        self.home = home
        self.tracking_uri = tracking_uri or default_tracking_uri(home)
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            # Alembic logs every migration step at INFO when a new SQLite store is created.
            for name in ("alembic", "mlflow.store.db.utils"):
                logging.getLogger(name).setLevel(logging.WARNING)
            # With tqdm installed, every artifact read drew a progress bar between rayline's lines.
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            # With a tracking server MLflow prints "View run NAME at: URL" on stdout ahead of
            # rayline's own line, which names the run (`rayline runs show` has the rest).
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as err:  # pragma: no cover - mlflow is a dependency
                raise RegistryError("mlflow is not installed") from err
            with self._mlflow("open the tracking store"):
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _mlflow(self, doing: str, *, missing: RegistryError | None = None) -> AbstractContextManager[None]:
        """``mlflow_errors`` for this registry's store: every MLflow call goes through it."""
        return mlflow_errors(doing, self.tracking_uri, missing=missing)

    @property
    def is_local(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")

    def _experiment_id(self, name: str, *, create: bool) -> str | None:
        with self._mlflow(f"open the experiment {name!r}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is not None:
                return str(exp.experiment_id)
            if not create:
                return None
            location = (self.home / "mlartifacts" / name).as_uri() if self.is_local else None
            return str(self.client.create_experiment(name, artifact_location=location))

    @contextmanager
    def start_run(
        self,
        experiment: str,
        *,
        kind: str,
        family: str,
        spec: Spec | None = None,
        run_name: str | None = None,
        parent_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> Iterator[ActiveRun]:
        """Open a run; it ends FINISHED when the block completes and FAILED when it raises."""
        exp_id = self._experiment_id(experiment, create=True)
        assert exp_id is not None
        all_tags: dict[str, Any] = {TAG_KIND: kind, TAG_FAMILY: family, **(tags or {})}
        if parent_id:
            all_tags[TAG_PARENT] = parent_id
        if spec is not None:
            all_tags[TAG_SPEC_HASH] = spec.fingerprint()
        with self._mlflow(f"create a run of {experiment!r}"):
            created = self.client.create_run(
                exp_id, run_name=run_name, tags={k: _clean(v) for k, v in all_tags.items()}
            )
        run = ActiveRun(self.client, created.info.run_id, store=self.tracking_uri)
        if spec is not None:
            import yaml

            run.log_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), "spec.yaml")
        status = "FAILED"
        try:
            yield run
            status = "FAILED" if run.failed else "FINISHED"
        finally:
            try:
                run.flush()
            finally:
                with self._mlflow(f"end run {run.run_id}"):
                    self.client.set_terminated(run.run_id, status=status)

    def annotate(self, run_id: str, metrics: Mapping[str, float], files: Mapping[str, str] | None = None) -> None:
        """Add metrics (at step 0) and text artifacts to an existing, possibly finished, run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        with self._mlflow(f"update run {run_id}"):
            if items:
                self.client.log_batch(run_id, metrics=items, synchronous=True)
            for name, text in (files or {}).items():
                self.client.log_text(run_id, text, name)

    def log_folder(self, run_id: str, folder: str | os.PathLike[str], artifact_path: str) -> None:
        """Add a folder's files as artifacts of an existing, possibly finished, run."""
        with self._mlflow(f"store {artifact_path}/ of run {run_id}"):
            self.client.log_artifacts(run_id, str(folder), artifact_path)

    # ----------------------------------------------------------------------------- reading
    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every logged value of ``key``, by step."""
        with self._mlflow(f"read the history of {key} of run {run_id}"):
            history = self.client.get_metric_history(run_id, key)
        return sorted((int(m.step), float(m.value)) for m in history)

    def read_text(self, run_id: str, artifact_path: str) -> str | None:
        """A text artifact of the run, or None when MLflow says the run has no such file (a store
        that fails otherwise raises)."""
        import tempfile

        try:
            with tempfile.TemporaryDirectory() as tmp, self._mlflow(f"read {artifact_path} of run {run_id}"):
                return Path(self.client.download_artifacts(run_id, artifact_path, tmp)).read_text()
        except Absent:
            return None

    def spec_of(self, run_id: str) -> Spec:
        """The spec a run was made from (its ``spec.yaml`` artifact)."""
        import yaml

        from rayline.spec import spec_from_dict

        text = self.read_text(run_id, "spec.yaml")
        if not text:
            raise RegistryError(f"run {run_id} has no spec.yaml")
        return spec_from_dict(yaml.safe_load(text), origin=f"spec.yaml of run {run_id}")

    def _record(self, run: Any, experiments: Mapping[str, str]) -> RunRecord:
        info, data = run.info, run.data
        return RunRecord(
            run_id=info.run_id,
            experiment=experiments.get(info.experiment_id, info.experiment_id),
            name=info.run_name or "",
            kind=data.tags.get(TAG_KIND, ""),
            family=data.tags.get(TAG_FAMILY, ""),
            status=info.status,
            start_time=_ts(info.start_time),
            end_time=_ts(info.end_time),
            metrics=dict(data.metrics),
            params=dict(data.params),
            tags=dict(data.tags),
            artifact_uri=info.artifact_uri or "",
        )

    def _experiments(self) -> dict[str, str]:
        with self._mlflow("list the experiments"):
            return {str(e.experiment_id): e.name for e in self.client.search_experiments()}

    def list_runs(
        self, experiment: str | None = None, *, kind: str | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        """Runs newest first, optionally of one experiment (spec name) and kind."""
        experiments = self._experiments()
        if experiment is not None:
            ids = [i for i, n in experiments.items() if n == experiment]
        else:
            ids = [i for i, n in experiments.items() if n != "Default"]
        if not ids:
            return []
        filters = f"tags.`{TAG_KIND}` = '{kind}'" if kind else ""
        with self._mlflow("list the runs"):
            runs = self.client.search_runs(
                ids, filter_string=filters, max_results=limit, order_by=["attributes.start_time DESC"]
            )
        return [self._record(r, experiments) for r in runs]

    def get(self, run_id: str) -> RunRecord:
        """A run by id or by a unique id prefix of at least 6 characters."""
        run_id = run_id.strip()
        if not RUN_ID.fullmatch(run_id):  # ids come from requests too: never a path or a pattern
            raise RegistryError(f"{run_id[:80]!r} is not a run id", hint="see `rayline runs list`")
        if len(run_id) < 32:
            matches = [r for r in self.list_runs() if r.run_id.startswith(run_id)] if len(run_id) >= 6 else []
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise RegistryError(f"run id prefix {run_id!r} matches {len(matches)} runs; give more characters")
            aliased = self._alias_anywhere(run_id) if ALIAS.fullmatch(run_id) else None
            if aliased is not None:
                return self.get(aliased)
            if len(run_id) < 6 and HEX.fullmatch(run_id):
                raise RegistryError(f"run id prefix {run_id!r} is too short: give 6 or more characters")
            what = "id" if HEX.fullmatch(run_id) else "id or alias"
            raise RegistryError(f"no run with {what} {run_id!r}", hint="see `rayline runs list`, `rayline models list`")
        unknown = RegistryError(f"no run with id {run_id!r}", hint="see `rayline runs list`")
        with self._mlflow(f"read run {run_id}", missing=unknown):
            run = self.client.get_run(run_id)
        return self._record(run, self._experiments())

    def resolve(self, experiment: str, selector: Selector, *, metric: str, mode: str) -> RunRecord:
        """``best`` (by ``metric``/``mode``), ``latest`` or a run id -> a finished run with a model."""
        if selector not in ("best", "latest"):
            aliased = self.alias_run(experiment, selector) if ALIAS.fullmatch(selector) else None
            if aliased is None and not HEX.fullmatch(selector):  # a name, not a run id: this spec's alias or nothing
                raise RegistryError(
                    f"spec {experiment!r} has no model with alias {selector!r}",
                    hint="`rayline models list` shows the aliases; `rayline promote RUN --alias NAME` sets one",
                )
            record = self.get(aliased or selector)
            if record.experiment != experiment:
                raise RegistryError(f"run {record.run_id} belongs to spec {record.experiment!r}, not {experiment!r}")
            if not record.has_model:
                raise RegistryError(f"run {record.run_id} ({record.kind}) has no model checkpoint")
            return record
        runs = [r for r in self.list_runs(experiment) if r.has_model and r.status == "FINISHED"]
        if not runs:
            raise RegistryError(
                f"no trained model for spec {experiment!r} in {self.tracking_uri}",
                hint="run `rayline train` first, or pass --model RUN_ID",
            )
        if selector == "latest":
            return runs[0]
        scored = [r for r in runs if metric in r.metrics]
        if not scored:
            raise RegistryError(f"no run of spec {experiment!r} has metric {metric!r} to pick the best by")
        return (min if mode == "min" else max)(scored, key=lambda r: r.metrics[metric])

    # ------------------------------------------------------------------- model versions, aliases
    def alias_run(self, model: str, alias: str) -> str | None:
        """The run the spec's registered model ``model`` holds under ``alias`` (None: no such alias)."""
        with self._mlflow(f"read alias {alias!r} of model {model!r}"):
            exists = self.client.search_registered_models(filter_string=f"name = '{_quoted(model)}'")
            if not exists or alias not in (exists[0].aliases or {}):
                return None
            return str(self.client.get_model_version_by_alias(model, alias).run_id)

    def _alias_anywhere(self, alias: str) -> str | None:
        """The run behind ``alias`` when exactly one spec's registered model has that alias."""
        with self._mlflow(f"look up alias {alias!r}"):
            holders = [m.name for m in self.client.search_registered_models() if alias in (m.aliases or {})]
        if len(holders) > 1:
            raise RegistryError(f"alias {alias!r} exists for specs {', '.join(holders)}; give a run id")
        return self.alias_run(holders[0], alias) if holders else None

    def versions(self, model: str) -> list[VersionRecord]:
        """The registered model's versions, newest first (empty when nothing was promoted)."""
        with self._mlflow(f"list the versions of model {model!r}"):
            found = self.client.search_registered_models(filter_string=f"name = '{_quoted(model)}'")
            if not found:
                return []
            by_version: dict[str, list[str]] = {}
            for alias, version in (found[0].aliases or {}).items():
                by_version.setdefault(str(version), []).append(alias)
            rows = self.client.search_model_versions(f"name = '{_quoted(model)}'")
        out = [
            VersionRecord(
                model=model,
                version=int(v.version),
                run_id=str(v.run_id),
                aliases=tuple(sorted(by_version.get(str(v.version), []))),
                created=_ts(v.creation_timestamp),
            )
            for v in rows
        ]
        return sorted(out, key=lambda v: -v.version)

    def registered_models(self) -> list[str]:
        with self._mlflow("list the registered models"):
            return sorted(m.name for m in self.client.search_registered_models())

    def set_alias(self, record: RunRecord, alias: str) -> VersionRecord:
        """Point ``alias`` of the spec's registered model at the run's model (a version per run)."""
        check_alias(alias)
        if not record.has_model:
            raise RegistryError(f"run {record.run_id} ({record.kind}) has no model checkpoint to promote")
        model = record.experiment
        with self._mlflow(f"set alias {alias!r} of model {model!r}"):
            if not self.client.search_registered_models(filter_string=f"name = '{_quoted(model)}'"):
                self.client.create_registered_model(model, description=f"rayline models of spec {model}")
            mine = [v for v in self.versions(model) if v.run_id == record.run_id]
            if mine:
                version = mine[0].version
            else:
                created = self.client.create_model_version(
                    model,
                    source=f"{record.artifact_uri.rstrip('/')}/{record.model_path}",
                    run_id=record.run_id,
                    tags={TAG_FAMILY: record.family},
                )
                version = int(created.version)
            self.client.set_registered_model_alias(model, alias, str(version))
        return next(v for v in self.versions(model) if v.version == version)

    def checkpoint_dir(self, run_id: str, dst: Path | None = None) -> Path:
        """Local folder with the run's checkpoint (downloaded when the store is remote)."""
        record = self.get(run_id)
        if not record.has_model:
            raise RegistryError(f"run {record.run_id} has no model checkpoint")
        local, inside = record.artifact_uri, record.checkpoint_path
        if local.startswith("file://"):
            from urllib.parse import unquote, urlparse

            path = Path(unquote(urlparse(local).path)) / inside
            if path.is_dir():
                return path
        target = dst or (self.home / "cache" / "checkpoints" / record.run_id)
        if (target / inside).is_dir():
            return target / inside
        target.mkdir(parents=True, exist_ok=True)
        lost = RegistryError(f"run {record.run_id} has no {inside}/ in its artifacts")
        with self._mlflow(f"fetch the checkpoint of run {record.run_id}", missing=lost):
            return Path(self.client.download_artifacts(record.run_id, inside, str(target)))


def open_registry(home: str | os.PathLike[str] | None = None) -> Registry:
    """The registry for ``home`` (a str or path; default ``RAYLINE_HOME``), or ``MLFLOW_TRACKING_URI``
    when set: a server that does not answer fails here, in seconds."""
    from rayline.runtime import home as default_home

    registry = Registry(Path(home) if home else default_home())
    check_reachable(registry.tracking_uri)
    return registry
