"""Promote a run: point an alias of its spec's registered model (MLflow) at it.

One registered model per spec (named like the spec), one version per promoted run, aliases on
versions (``champion``, ``challenger``, ...). An alias works wherever ``--model`` does.

A promotion never makes an alias worse silently: when the alias already points at another run,
both are evaluated on the candidate spec's validation split (the same rows, the same code as
``rayline evaluate``) and a candidate that does worse is refused unless forced, with the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayline.errors import RegistryError
from rayline.registry import Registry, VersionRecord, check_alias, open_registry
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
    forced: bool = False


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
) -> Promotion:
    """Point ``alias`` at the run's model; refuse (RegistryError) a candidate worse than the holder."""
    check_alias(alias)
    registry = registry or open_registry()
    record = registry.get(run_id)
    if not record.has_model:
        raise RegistryError(f"run {record.run_id} ({record.kind}) has no model checkpoint to promote")
    holder = registry.alias_run(record.experiment, alias)
    if holder is None or holder == record.run_id:
        return Promotion(alias, registry.set_alias(record, alias), holder)
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
    return Promotion(alias, registry.set_alias(record, alias), holder, metric, ours, held, forced=worse)
