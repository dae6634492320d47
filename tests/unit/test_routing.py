"""The canary's sticky choice and the shadow's agreement (rayline.serving._routing), without a service."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from rayline.serving._routing import ROUTE_KEY, Agreement, ModelStats, Router, Traffic


class _Served:
    """What the router reads of ``Served``: the primary run and how model ids resolve."""

    spec_name, home, tracking_uri = "taxi", "/nonexistent", "sqlite:///nonexistent.db"
    alias_ttl_s = 10.0

    def __init__(self) -> None:
        self.run_id = "primary-run"

    async def resolve(self, model_id: str | None) -> str:
        return {"challenger": "canary-run"}.get(model_id or "", model_id or self.run_id)


def _router(percent: float) -> Router:
    async def predict(items: list[Any], run_id: str) -> list[dict[str, Any]]:
        return [{"label": run_id} for _ in items]

    router = Router(_Served(), Traffic(primary="primary-run", canary="challenger", canary_percent=percent), predict)  # type: ignore[arg-type]
    router.canary_run = "canary-run"
    return router


def test_the_canary_gets_its_share_and_a_key_sticks() -> None:
    asyncio.run(_canary_share())


async def _canary_share() -> None:
    router = _router(10.0)
    picks = Counter([await router.route(None) for _ in range(4000)])
    assert 300 <= picks["canary-run"] <= 500  # binomial(4000, 0.1): 400 +- 19
    sides: Counter[str] = Counter()
    for key in (f"user-{i}" for i in range(2000)):
        ROUTE_KEY.set(key)
        first = await router.route(None)
        assert all([await router.route(None) == first for _ in range(5)])
        sides[first] += 1
    ROUTE_KEY.set(None)
    assert 130 <= sides["canary-run"] <= 270  # keys hash across the share too
    assert await router.route("challenger") == "canary-run"  # a named model wins over the split


def test_agreement_counts_labels_and_probability_differences() -> None:
    agreement = Agreement()
    agreement.add(
        [{"label": 1, "probability": 0.9}, {"label": 0, "probability": 0.2}, {"label": 1, "probability": 0.6}],
        [{"label": 1, "probability": 0.7}, {"label": 1, "probability": 0.6}, {"label": 1, "probability": 0.6}],
    )
    summary = agreement.as_dict()
    assert summary["compared"] == 3
    assert summary["label_agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["mean_abs_difference"] == pytest.approx((0.2 + 0.4 + 0.0) / 3, abs=1e-6)
    multi = Agreement()
    multi.add(
        [{"label": "a", "probabilities": {"a": 0.5, "b": 0.5}}], [{"label": "b", "probabilities": {"a": 0.1, "b": 0.9}}]
    )
    assert multi.as_dict()["label_agreement"] == 0 and multi.as_dict()["mean_abs_difference"] == pytest.approx(0.4)


def test_requests_are_counted_per_model_and_failures_too() -> None:
    asyncio.run(_counts())


async def _counts() -> None:
    calls = 0

    async def flaky(items: list[Any], run_id: str) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        return [{"label": 1} for _ in items]

    router = Router(_Served(), Traffic(primary="primary-run"), flaky)  # type: ignore[arg-type]
    router.stats["primary-run"] = ModelStats("primary")
    await router.predict([1, 2, 3], "primary-run")
    with pytest.raises(RuntimeError):
        await router.predict([1], "primary-run")
    stats = router.summary()["models"]["primary-run"]
    assert (stats["role"], stats["requests"], stats["items"], stats["errors"]) == ("primary", 2, 3, 1)
