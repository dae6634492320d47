"""A failed cluster test reports the cluster as it was: nodes, live actors, placement groups, the
raylets' errors, free memory and disk (what a CI log needs to tell a busy cluster from a bug)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest
from local_cluster import LocalCluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, LocalCluster):
                report.sections.append(("the cluster when the test failed", value.describe()))
                break
    return report
