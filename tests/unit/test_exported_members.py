"""The public API is exactly ``__all__``, sorted, each name documented, its errors rayline's own."""

from __future__ import annotations

import re

import rayline


def test_all_is_sorted_and_complete() -> None:
    assert rayline.__all__ == sorted(rayline.__all__)
    public = {name for name in vars(rayline) if not name.startswith("_") and name not in {"annotations"}}
    modules = {name for name in public if type(getattr(rayline, name)).__name__ == "module"}
    assert public - modules - {"TYPE_CHECKING", "Any"} == set(rayline.__all__) - {"__version__"}


def test_every_exported_name_is_documented_and_every_error_is_a_rayline_error() -> None:
    """``help(rayline.X)`` says what X is (its own docstring, not one inherited); every exported
    error is a ``RaylineError``, which the CLI turns into one line (any other exception is a bug's
    "unexpected" line)."""
    undocumented = [
        n for n in rayline.__all__ if n != "__version__" and not (getattr(rayline, n).__doc__ or "").strip()
    ]
    assert undocumented == []
    errors = [getattr(rayline, n) for n in rayline.__all__ if n.endswith("Error")]
    assert len(errors) > 1 and all(issubclass(e, rayline.RaylineError) for e in errors), errors
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", rayline.__version__), rayline.__version__


def test_stage_functions_are_functions_not_modules() -> None:
    import rayline.stages.evaluate
    import rayline.stages.predict
    import rayline.stages.train
    import rayline.stages.tune

    for name in ("train", "tune", "predict", "evaluate", "serve"):
        assert callable(getattr(rayline, name)) and type(getattr(rayline, name)).__name__ == "function"
