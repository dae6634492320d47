"""``rayline doctor``: versions, CPUs, GPUs and the environment rayline will use."""

from __future__ import annotations

import os
from collections.abc import Callable

import typer

from rayline._version import __version__
from rayline.cli.shared import out
from rayline.errors import RaylineError


def doctor() -> None:
    """Print versions, CPUs, GPUs and the environment rayline will use."""
    import platform
    from importlib import metadata

    from rayline.families import names
    from rayline.registry import check_reachable, default_tracking_uri
    from rayline.runtime import check_listening, cluster_address, home, local_cpus

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        import torch

        gpus = f"{torch.cuda.device_count()} (CUDA {'available' if torch.cuda.is_available() else 'unavailable'})"
    except Exception as exc:  # a broken torch install should not break doctor
        gpus = f"unknown ({type(exc).__name__})"
    rows = [
        ("rayline", __version__),
        ("python", platform.python_version()),
        ("ray", version("ray")),
        ("xgboost", version("xgboost")),
        ("lightgbm", version("lightgbm")),
        ("torch", version("torch")),
        ("torchvision", version("torchvision")),
        ("mlflow", version("mlflow")),
        ("cpus", f"{os.cpu_count()} (rayline uses {local_cpus()} locally)"),
        ("gpus", gpus),
        ("families", ", ".join(names())),
        ("RAY_ADDRESS", _reached(check_listening, cluster_address()) or "(unset: embedded local Ray)"),
        ("RAYLINE_HOME", str(home())),
        ("tracking", _reached(check_reachable, default_tracking_uri(home()))),
    ]
    for key, value in rows:
        out.print(f"{key:>12}  {value}")
    if any("NOT REACHABLE" in str(value) for _, value in rows):
        raise typer.Exit(1)


def _reached(check: Callable[[str], None], where: str | None) -> str | None:
    """``where``, marked when the check finds nothing answering there."""
    if where is None:
        return None
    try:
        check(where)
    except RaylineError as exc:
        return f"{where}  NOT REACHABLE: {exc.message.rsplit(': ', 1)[-1]}"
    return where
