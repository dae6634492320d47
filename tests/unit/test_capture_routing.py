"""The router hands every answered request to the capture, with its role; the shadow's answers too."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from rayline.data.capture import outputs_of, read_capture
from rayline.serving._capture import Capture
from rayline.serving._routing import Router, Traffic


class _Served:
    spec_name, home, tracking_uri = "taxi", "/nonexistent", "sqlite:///nonexistent.db"
    alias_ttl_s = 10.0

    def __init__(self) -> None:
        self.run_id = "primary-run"

    async def resolve(self, model_id: str | None) -> str:
        return model_id or self.run_id


async def _answer(items: list[Any], run_id: str) -> list[dict[str, Any]]:
    if run_id == "broken":
        raise ValueError("no")
    return [{"label": run_id} for _ in items]


async def _traffic(folder: Path) -> Router:
    capture = {"path": str(folder), "fraction": 1.0}
    traffic = Traffic(
        primary="primary-run", canary="canary-run", canary_percent=50.0, shadow="shadow-run", capture=capture
    )
    served = _Served()
    # start() looks the aliases up: a store in the test's folder, not a file in the working directory.
    served.home, served.tracking_uri = str(folder.parent), f"sqlite:///{folder.parent / 'mlflow.db'}"
    router = Router(served, traffic, _answer)  # type: ignore[arg-type]
    await router.start()
    for i in range(20):
        run_id = await router.route(None)
        await asyncio.create_task(router.predict([{"x": i}, {"x": -i}], run_id))  # a request: a task
    with contextlib.suppress(ValueError):
        await router.predict([{"x": 0}], "broken")
    await asyncio.gather(*router._mirrors)
    summary = router.summary()["capture"]
    router.close()
    assert summary["fraction"] == 1.0 and summary["dropped"] == 0
    return router


def test_every_answer_is_captured_with_its_role(tmp_path: Path) -> None:
    router = asyncio.run(_traffic(tmp_path))
    table = read_capture(str(tmp_path), roles=None)
    roles = table.column("role").to_pylist()
    primary, canary, shadow = (roles.count(r) for r in ("primary", "canary", "shadow"))
    assert primary + canary == 40 and primary > 0 and canary > 0  # two items a request, a failure not captured
    assert shadow == primary  # the shadow answers what the primary answered
    answers = {(r, o["label"]) for r, o in zip(roles, outputs_of(table), strict=True)}
    assert answers == {("primary", "primary-run"), ("canary", "canary-run"), ("shadow", "shadow-run")}
    ids = table.column("request_id").to_pylist()
    assert len(set(ids)) == 20  # a request and its shadow answer share the id
    assert router.capture is not None and router.capture.writer.stats()["rows"] == table.num_rows


def test_sampling_is_by_request_id(tmp_path: Path) -> None:
    capture = Capture({"path": str(tmp_path), "fraction": 0.25})
    kept = [capture.sampled(f"request-{i}") for i in range(4000)]
    assert 850 <= sum(kept) <= 1150
    assert kept == [capture.sampled(f"request-{i}") for i in range(4000)]  # the same id, the same choice
    capture.close()
