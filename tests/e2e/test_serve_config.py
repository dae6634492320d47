"""`rayline serve --print-config`: a Ray Serve config that Ray's own `serve run` deploys, answering
exactly as `rayline serve` does for the same model. The services run as processes; the train and
the printed config come from the CLI's entry point in this process (neither starts Ray)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import yaml

from inprocess import rayline_here
from rayline.serving.ports import free_port
from service import call, serving

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPEC = [str(EXAMPLES / "taxi.yaml"), "--set", "data.rows=4000", "--set", "model.num_boost_round=15"]
RECORDS = [
    {"passenger_count": 1, "trip_distance": d, "fare_amount": f, "trip_duration": 600, "hour": h, "day_of_week": 3}
    for d, f, h in [(0.5, 5.0, 3), (2.5, 12.0, 18), (20.0, 80.0, 8)]
]


def test_serve_run_of_the_printed_config_answers_as_rayline_serve(
    tmp_path: Path, rayline_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    env = dict(os.environ)  # RAYLINE_HOME: this test's (conftest), no RAY_ADDRESS
    code, out, err = rayline_here(capfd, "train", *SPEC)
    assert code == 0, err
    run_id = re.search(r"run ([0-9a-f]{32})", out).group(1)  # type: ignore[union-attr]
    body = json.dumps(RECORDS).encode()
    with serving([*SPEC, "--model", run_id, "--set", "serve.num_replicas=1"], env) as (url, _):
        status, expected = call(f"{url}/predict", body)
        assert status == 200

    port = free_port()
    args = ["serve", *SPEC, "--model", run_id, "--port", str(port), "--host", "127.0.0.1", "--print-config"]
    code, printed, err = rayline_here(capfd, *args)
    assert code == 0, err
    config = yaml.safe_load(printed)
    assert config["applications"][0]["args"]["model"] == run_id
    # The registry it was printed from travels with it: Ray builds the application elsewhere.
    assert config["applications"][0]["runtime_env"] == {"env_vars": {"RAYLINE_HOME": str(rayline_home)}}
    path = tmp_path / "serve.yaml"
    path.write_text(printed)
    serve_cli = Path(sys.executable).with_name("serve")
    proc = subprocess.Popen(
        [str(serve_cli), "run", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline, status, got = time.monotonic() + 240, 0, None
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                status, got = call(f"http://127.0.0.1:{port}/predict", body)
                if status == 200:
                    break
            time.sleep(0.25)
        assert status == 200, (status, got)
        assert got == expected  # same run, same predictions, to the last digit
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
