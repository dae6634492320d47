"""rayline: from data to a served model on Ray, from one declarative spec.

The Python API mirrors the CLI. Heavy dependencies (ray, torch, mlflow) load on first use.
"""

from rayline.errors import (
    DataError,
    RaylineError,
    RegistryError,
    RuntimeStartError,
    ServeError,
    SpecError,
    TrainError,
)
from rayline.registry import Registry, RunRecord, open_registry
from rayline.spec import Spec, load_spec, spec_from_dict

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "RaylineError",
    "Registry",
    "RegistryError",
    "RunRecord",
    "RuntimeStartError",
    "ServeError",
    "Spec",
    "SpecError",
    "TrainError",
    "__version__",
    "load_spec",
    "open_registry",
    "spec_from_dict",
]
