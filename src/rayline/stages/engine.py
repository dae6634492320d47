"""Which engine runs a stage's work, and the plugs a spec resolves to.

Small data must not pay for Ray: training runs in this process when ``scaling.num_workers`` is
``auto`` and the data kind says the data fits; predict and evaluate run here for modest local
inputs on the embedded Ray (``predict.engine``). Everything else goes to Ray.
"""

from __future__ import annotations

from rayline import runtime
from rayline.data import DataKind, Prepared, get_kind
from rayline.families import Family, get_family
from rayline.spec import Spec


def plugs(spec: Spec) -> tuple[Family, DataKind]:
    """The spec's family and the data kind it learns from."""
    family = get_family(spec.model.family)
    return family, get_kind(family.data_kind)


def trains_in_process(spec: Spec, kind: DataKind) -> bool:
    return spec.scaling.num_workers == "auto" and kind.fits_in_process(spec)


def prepare(spec: Spec, family: Family, kind: DataKind, *, in_process: bool) -> Prepared:
    """Read, check and split the spec's data on the chosen engine; the loop's config names the family."""
    data = kind.prepare_local(spec) if in_process else kind.prepare_ray(spec)
    data.config["family"] = family.name
    return data


def predicts_in_process(spec: Spec, kind: DataKind, source: str | None, *, streaming: bool = False) -> bool:
    """``predict.engine``: local/ray as set; auto is local on the embedded Ray for modest local
    inputs, and for any input that is predicted part by part (``streaming``: memory holds a
    batch). On one machine the pool's actors share the same cores and the pool pays for Ray's
    start (5-10 s here): in process was faster at every size measured (docs/benchmarks.md)."""
    engine = spec.predict.engine
    if engine != "auto":
        return engine == "local"
    if runtime.cluster_address() is not None or spec.predict.num_gpus > 0:
        return False
    return streaming or kind.modest(spec, source)
