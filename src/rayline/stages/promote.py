"""Promote a run: point an alias of its spec's registered model (MLflow) at it.

One registered model per spec (named like the spec), one version per promoted run, aliases on
versions (``champion``, ``challenger``, ...). An alias works wherever ``--model`` does.

A promotion never makes an alias worse silently: when the alias already points at another run,
both are evaluated on the candidate spec's validation split (the same rows, the same code as
``rayline evaluate``) and a candidate that does worse is refused unless forced, with the margin.

``evidence``: a replay run of the candidate on captured traffic (``rayline replay --labels``).
Its bootstrap interval of the spec's metric (candidate minus the recorded model) decides: a
candidate worse with confidence (the whole interval below zero where higher is better, above
zero where lower is) is refused; a point difference alone refuses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayline.errors import RegistryError
from rayline.registry import Registry, RunRecord, VersionRecord, check_alias, open_registry
from rayline.spec import Spec
from rayline.stages.evaluate import evaluate


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` did: the version the alias now names, and the comparison behind it."""

    alias: str
    version: VersionRecord
    previous_run_id: str | None
    metric: str | None = None
    candidate: float | None = None
    holder: float | None = None
    forced: bool = False  # worse than the holder, promoted with --force
    evidence: Evidence | None = None  # --evidence: the replay's verdict (``worse`` and promoted: forced)


@dataclass(frozen=True)
class Evidence:
    """A replay's verdict on a candidate: the metric's difference and its interval."""

    run_id: str
    metric: str
    mode: str
    difference: float
    low: float
    high: float

    @property
    def worse(self) -> bool:
        """Worse with confidence: the whole interval on the wrong side of zero."""
        return self.high < 0 if self.mode == "max" else self.low > 0


def evidence_of(record: RunRecord, replay_id: str, spec: Spec, registry: Registry) -> Evidence:
    """The interval replay run ``replay_id`` holds for ``record``'s model (RegistryError when it cannot judge it)."""
    replay = registry.get(replay_id)
    if replay.kind != "replay":
        raise RegistryError(f"--evidence {replay.run_id[:12]}: a {replay.kind} run, not a replay (rayline replay)")
    replayed = replay.tags.get("rayline.model_run", "")
    if replayed != record.run_id:
        raise RegistryError(
            f"--evidence {replay.run_id[:12]}: a replay of run {replayed[:12]}, not of run {record.run_id[:12]}"
        )
    diffs = {
        name.removeprefix("diff_"): value
        for name, value in replay.metrics.items()
        if name.startswith("diff_") and not name.endswith(("_low", "_high"))
    }
    if not diffs:
        raise RegistryError(
            f"--evidence {replay.run_id[:12]}: the replay had no labels (--labels), so no interval to judge by"
        )
    metric, mode = comparison(spec, diffs)
    low, high = replay.metrics[f"diff_{metric}_low"], replay.metrics[f"diff_{metric}_high"]
    return Evidence(replay.run_id, metric, mode, diffs[metric], low, high)


def comparison(spec: Spec, metrics: dict[str, float]) -> tuple[str, str]:
    """The evaluation metric that decides, and whether lower or higher is better.

    The spec's own metric when evaluation computes it (``valid_auc`` -> ``auc``), else the loss
    evaluation always computes (log loss for classes, RMSE for regression)."""
    name = spec.metric.removeprefix("valid_")
    if name in metrics:
        return name, spec.mode
    return ("logloss", "min") if "logloss" in metrics else ("rmse", "min")


def promote(
    run_id: str,
    alias: str,
    *,
    force: bool = False,
    spec: Spec | None = None,
    registry: Registry | None = None,
    evidence: str | None = None,
) -> Promotion:
    """Point ``alias`` at the run's model; refuse (RegistryError) a candidate worse than the holder,
    or worse with confidence on the traffic replayed by the replay run ``evidence``."""
    check_alias(alias)
    registry = registry or open_registry()
    record = registry.get(run_id)
    if not record.has_model:
        raise RegistryError(f"run {record.run_id} ({record.kind}) has no model checkpoint to promote")
    judged: Evidence | None = None
    if evidence is not None:
        spec = spec or registry.spec_of(record.run_id)
        judged = evidence_of(record, evidence, spec, registry)
        if judged.worse and not force:
            side = "below" if judged.mode == "max" else "above"
            raise RegistryError(
                f"run {record.run_id[:12]} is worse on replayed traffic (replay run {judged.run_id[:12]}): "
                f"{judged.metric} difference {judged.difference:+.4f}, "
                f"interval [{judged.low:+.4f}, {judged.high:+.4f}] lies {side} zero",
                hint="pass --force to promote it anyway",
            )
    holder = registry.alias_run(record.experiment, alias)
    if holder is None or holder == record.run_id:
        return Promotion(alias, registry.set_alias(record, alias), holder, evidence=judged)
    spec = spec or registry.spec_of(record.run_id)
    if spec.name != record.experiment:
        raise RegistryError(f"run {record.run_id} belongs to spec {record.experiment!r}, not {spec.name!r}")
    mine = evaluate(spec, model=record.run_id, registry=registry).metrics
    theirs = evaluate(spec, model=holder, registry=registry).metrics
    metric, mode = comparison(spec, mine)
    ours, held = mine[metric], theirs[metric]
    worse = ours > held if mode == "min" else ours < held
    if worse and not force:
        gap = abs(ours - held)
        share = f", {gap / abs(held):.1%}" if held else ""
        raise RegistryError(
            f"run {record.run_id[:12]} is worse than {alias} (run {holder[:12]}) on the validation split: "
            f"{metric} {ours:.4f} vs {held:.4f} ({'+' if ours > held else '-'}{gap:.4f}{share})",
            hint="pass --force to promote it anyway",
        )
    return Promotion(alias, registry.set_alias(record, alias), holder, metric, ours, held, worse, judged)
