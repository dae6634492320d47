"""The README's quickstart, run command for command on a small CSV of the shape it describes.

The commands are read from the README's quickstart block (and the spec-less `rayline run` from
the paragraph under it), as tests/e2e/test_production.py reads docs/production.md: a change to
the README that no longer runs fails here. Only the port changes (a free one instead of 8000);
`rayline serve` runs in the background until /healthz answers, the `curl` asks it for a
prediction, and the service is stopped by its PID."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from inprocess import new_home
from service import SCRIPT, serving

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def quickstart() -> tuple[list[str], str]:
    """The quickstart block's commands, in order, and the spec-less `rayline run` named below it."""
    section = re.search(r"^## Quickstart.*?(?=^## )", README, flags=re.S | re.M)
    assert section, "README.md has no '## Quickstart' section"
    block = re.search(r"```bash\n(.*?)```", section.group(0), flags=re.S)
    assert block, "the quickstart has no bash block"
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    specless = re.search(r"`(rayline run \S+\.csv --label \S+)`", section.group(0))
    assert specless, "the quickstart names no spec-less `rayline run DATA.csv --label COL`"
    return commands, specless.group(1)


def write_customers(path: Path, rows: int = 400) -> None:
    """``data.csv`` as the quickstart describes it: one customer a row, ``churned`` to predict; a
    text column (plan), an id and a constant column, which the spec decided from it leaves out."""
    rng = np.random.default_rng(7)
    plan = rng.choice(["basic", "pro", "team"], rows)
    fee = np.round(rng.uniform(5, 80, rows), 2)
    age = rng.integers(18, 80, rows)
    odds = -1.0 + 0.03 * fee - 0.02 * (age - 45) + np.where(plan == "basic", 0.8, -0.4)
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-odds)), "yes", "no")
    lines = ["customer_id,age,plan,monthly_fee,country,churned"]
    lines += [f"{10_000 + i},{age[i]},{plan[i]},{fee[i]},NL,{churned[i]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def argv(command: str, port: int) -> list[str]:
    """A README command ready to run: `rayline` is this environment's, the port the test's own."""
    words = shlex.split(command.replace(":8000", f":{port}"), comments=True)
    if words[0] == "rayline":
        return [str(SCRIPT), *words[1:]]
    return words


def test_readme_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    from rayline.serving.ports import free_port

    commands, specless = quickstart()
    starts = [c.split()[:2] for c in commands]
    assert starts == [["rayline", "init"], ["rayline", "run"], ["rayline", "serve"], ["curl", "-s"]], commands
    monkeypatch.chdir(tmp_path)  # the service's process starts here too
    home = new_home(tmp_path / "home")  # its MLflow store migrated already (the first command's seconds)
    env = {**os.environ, "RAYLINE_HOME": str(home)}
    write_customers(tmp_path / "data.csv")
    port = free_port()

    def run(command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv(command, port), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    init, run_spec, serve, curl = commands
    decided = run(init)
    written = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert written["data"]["label"] == "churned"
    assert sorted(written["data"]["features"]) == ["age", "monthly_fee", "plan"], decided.stdout
    assert "customer_id" in decided.stdout and "country" in decided.stdout  # said why they are left out

    ran = run(run_spec)
    assert re.search(r"^model [0-9a-f]{32}", ran.stdout, flags=re.M), ran.stdout

    serve_args = argv(serve, port)[2:]  # after `rayline serve`; serving() adds --port
    with serving(serve_args, env, port=port) as (url, proc):
        assert url.endswith(f":{port}")  # the port the curl asks
        answered = run(curl)
        pid = proc.pid
    body = json.loads(answered.stdout)
    assert re.fullmatch(r"[0-9a-f]{32}", body["model"]), body
    [prediction] = body["predictions"]
    assert prediction["label"] in ("yes", "no") and 0 <= prediction["probability"] <= 1, body
    assert proc.poll() is not None, f"the service (pid {pid}) is still running"

    # No spec wanted: the same decisions, stored under RAYLINE_HOME/specs/ and printed.
    alone = run(specless)
    stored = home / "specs" / "data.yaml"
    assert stored.is_file() and f"spec: {stored.resolve()}" in alone.stdout, alone.stdout
    assert yaml.safe_load(stored.read_text())["data"]["features"] == written["data"]["features"], alone.stdout
