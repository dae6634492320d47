"""The public API is exactly ``__all__``, sorted, and every name resolves."""

from __future__ import annotations

import rayline


def test_all_is_sorted_and_complete() -> None:
    assert rayline.__all__ == sorted(rayline.__all__)
    public = {name for name in vars(rayline) if not name.startswith("_") and name not in {"annotations"}}
    modules = {name for name in public if type(getattr(rayline, name)).__name__ == "module"}
    assert public - modules - {"TYPE_CHECKING", "Any"} == set(rayline.__all__) - {"__version__"}


def test_every_exported_name_resolves() -> None:
    for name in rayline.__all__:
        assert getattr(rayline, name) is not None


def test_stage_functions_are_functions_not_modules() -> None:
    import rayline.stages.evaluate
    import rayline.stages.predict
    import rayline.stages.train
    import rayline.stages.tune

    for name in ("train", "tune", "predict", "evaluate", "serve"):
        assert callable(getattr(rayline, name)) and type(getattr(rayline, name)).__name__ == "function"
