"""The same specs on a real 2-node Ray cluster: Train workers, trials, the prediction pool and
Serve replicas land on both nodes, jobs are submitted, the registry is a tracking server, and the
terminal stays quiet.

One cluster for the module (``ray start --head`` + ``ray start --address``, 2 CPUs a node, Ray's
token auth on), stopped by its process ids. Every command is the ``rayline`` CLI in a process of
its own with ``RAY_ADDRESS`` set, as a user runs it; placement is read from Ray's state API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from local_cluster import LocalCluster, free_port

import imagesets
from inprocess import new_home
from service import TAXI_RECORD, call

pytestmark = pytest.mark.slow
SCRIPT = Path(sys.executable).with_name("rayline")
REPO = Path(__file__).resolve().parents[2]
TAXI = str(REPO / "examples" / "taxi.yaml")
# What a quiet command must not print: the raylets' notices and Ray's own log lines (C++ ones too).
NOISE = ("(raylet)", "WARNING", ".cc:", "INFO worker.py", "Traceback")


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A local S3 server (moto) with a bucket, and the variables that reach it (its endpoint, keys)."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    reach = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "rayline-test",
        "AWS_SECRET_ACCESS_KEY": "rayline-test",
    }
    client(reach).create_bucket(Bucket=BUCKET)
    try:
        yield reach
    finally:
        server.stop()


BUCKET = "rayline-results"


def client(s3: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name=s3["AWS_REGION"],
        aws_access_key_id=s3["AWS_ACCESS_KEY_ID"], aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip


def stored(s3: dict[str, str], prefix: str) -> set[str]:
    """The keys under ``prefix`` in the test bucket."""
    pages = client(s3).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


class _Writes(logging.Handler):
    """The keys of the bucket's PUTs and POSTs in the S3 server's request log (werkzeug's)."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.INFO)
        self.pattern = re.compile(rf'"(?:PUT|POST) /{BUCKET}/({re.escape(prefix)}[^ ?]*)')
        self.keys: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        found = self.pattern.search(record.getMessage())
        if found:
            self.keys.add(urllib.parse.unquote(found.group(1)))


@contextlib.contextmanager
def watching(prefix: str) -> Iterator[set[str]]:
    """Every key written under ``prefix`` while the block runs. rayline clears a run's storage once
    the run is registered, so the writes are read from the server's log as they come, not listed
    after (a listing now and then missed a short-lived checkpoint on a busy machine)."""
    log = logging.getLogger("werkzeug")
    writes, level = _Writes(prefix), log.level
    log.addHandler(writes)
    log.setLevel(logging.INFO)
    try:
        yield writes.keys
    finally:
        log.removeHandler(writes)
        log.setLevel(level)


@pytest.fixture(scope="module")
def cluster(s3: dict[str, str]) -> Iterator[LocalCluster]:
    # The nodes reach the S3 server as a real cluster's nodes reach their object storage.
    running = LocalCluster(nodes=2, cpus=2, node_env=s3).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def leaves_the_cluster_idle(cluster: LocalCluster) -> Iterator[None]:
    """Each test ends with every CPU free again, or fails saying what holds them."""
    yield
    cluster.wait_idle()


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    """One RAYLINE_HOME for the module: predict and serve use the run the train test registers.
    Its MLflow store is migrated already, as every test's RAYLINE_HOME (tests/conftest.py)."""
    return new_home(tmp_path_factory.mktemp("cluster-home"))


def cluster_env(cluster: LocalCluster, home: Path) -> dict[str, str]:
    """A user's shell on this cluster. Its nodes share this machine's disk, so its registry and
    storage may stay here (RAYLINE_SHARED_DISK); the tests below without it show the refusal."""
    return {**cluster.env(), "RAY_ADDRESS": cluster.address, "RAYLINE_HOME": str(home), "RAYLINE_SHARED_DISK": "1"}


@pytest.fixture
def env(cluster: LocalCluster, shared_home: Path) -> dict[str, str]:
    return cluster_env(cluster, shared_home)


@pytest.fixture(scope="module")
def spread_run(cluster: LocalCluster, shared_home: Path) -> tuple[str, set[str]]:
    """A taxi run trained by 2 Ray Train workers: (the command's output, the nodes they ran on)."""
    env = cluster_env(cluster, shared_home)
    before = actors(cluster, "RayTrainWorker")
    out = rayline(env, "train", TAXI, "--set", "scaling.num_workers=2", "--set", "data.rows=20000")
    return out, new_nodes(cluster, "RayTrainWorker", before)


def rayline(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert done.returncode == 0, f"rayline {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    noise = [line for line in (done.stdout + done.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise[:5]
    return done.stdout


def actors(cluster: LocalCluster, class_part: str) -> dict[str, str]:
    """Actor id -> node id of every actor (alive or dead) whose class name contains ``class_part``."""
    # Ray's state API over HTTP (what `ray list actors` calls), with the cluster's token.
    url = f"{cluster.dashboard}/api/v0/actors?limit=10000&detail=1"
    with urllib.request.urlopen(urllib.request.Request(url, headers=cluster.headers()), timeout=30) as reply:
        found = json.load(reply)["data"]["result"]["result"]
    return {a["actor_id"]: a["node_id"] for a in found if class_part in a["class_name"]}


def new_nodes(cluster: LocalCluster, class_part: str, before: dict[str, str]) -> set[str]:
    return {node for actor, node in actors(cluster, class_part).items() if actor not in before}


def test_train_workers_spread_over_both_nodes(spread_run: tuple[str, set[str]]) -> None:
    out, nodes = spread_run
    assert "(ray-train:2" in out, out
    assert len(nodes) == 2


def test_prediction_pool_spans_both_nodes(
    cluster: LocalCluster, env: dict[str, str], spread_run: tuple[str, set[str]]
) -> None:
    before = actors(cluster, "PartPredictor")
    # 600,000 trips are 3 row groups, so 3 parts: enough for both actors of the pool.
    out = rayline(
        env, "predict", TAXI, "--set", "data.rows=600000", "--set", "predict.engine=ray",
        "--set", "predict.concurrency=2",
    )  # fmt: skip
    assert "Ray actor pool" in out, out
    assert len(new_nodes(cluster, "PartPredictor", before)) == 2


def test_trials_share_the_cluster_and_keep_their_results_on_s3(
    cluster: LocalCluster, tracking: str, s3: dict[str, str], rayline_home: Path
) -> None:
    """A user's cluster: the registry a tracking server, the Tune/Train storage on S3, nothing on
    this machine's disk. Each trial's Train worker is sized from its share of the CPUs and fits on
    one node (a 3-CPU worker, sized from the cluster's 4, waited for a node forever)."""
    env = user_env(cluster, rayline_home, MLFLOW_TRACKING_URI=tracking, RAYLINE_STORAGE=f"s3://{BUCKET}/tune")
    before = actors(cluster, "RayTrainWorker")
    with watching("tune/") as seen:
        out = rayline(
            env, "tune", TAXI, "--set", "data.rows=20000", "--set", "scaling.num_workers=1",
            "--set", "tune.num_samples=2", "--set", "tune.max_concurrent=2",
        )  # fmt: skip
    assert "2 trials" in out, out
    assert len(new_nodes(cluster, "RayTrainWorker", before)) == 2
    assert any("/checkpoint_" in key for key in seen), (sorted(seen)[:20], out)  # the trials' checkpoints
    assert stored(s3, "tune/") <= {"tune/"}  # the search's state is cleared once its runs are registered


MNIST = str(REPO / "examples" / "mnist.yaml")


def test_the_image_workload_on_both_nodes(cluster: LocalCluster, env: dict[str, str], tmp_path: Path) -> None:
    """ResNet18 at smoke size: DDP over 2 Ray Train workers on different nodes, then batch
    prediction on an actor pool with an actor on each node."""
    folder = str(imagesets.digits(tmp_path / "digits", per_class=10, classes=[0, 1, 2]))
    small = ("--set", f"data.source={folder}", "--set", "model.epochs=1", "--set", "model.batch_size=16")
    before = actors(cluster, "RayTrainWorker")
    out = rayline(env, "train", MNIST, *small, "--set", "scaling.num_workers=2")
    assert "(ray-train:2" in out, out
    assert len(new_nodes(cluster, "RayTrainWorker", before)) == 2
    before = actors(cluster, "BatchPredictor")
    out = rayline(
        env, "predict", MNIST, *small, "--model", out.split()[1], "--set", "predict.engine=ray",
        "--set", "predict.concurrency=2", "--set", "predict.batch_size=4",
    )  # fmt: skip
    assert "Ray actor pool" in out, out
    assert len(new_nodes(cluster, "BatchPredictor", before)) == 2


def test_a_worker_no_node_can_hold_fails_at_once(cluster: LocalCluster, env: dict[str, str]) -> None:
    start = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "train", TAXI, "--set", "scaling.num_workers=2", "--set", "scaling.cpus_per_worker=3"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "scaling.cpus_per_worker asks for 3 CPUs, and the largest Ray node has 2" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 30  # checked before the data is read: no wait for a node


# What a busy cluster looks like to a new run: another driver's actors hold its CPUs. Each line
# it reads names CPUs to hold besides those it holds, node by node; it answers once they are held.
HOG = """
import sys, ray
ray.init()
@ray.remote
class Holder:
    def ready(self): return True
held = []
for line in sys.stdin:
    more = [Holder.options(num_cpus=float(n), resources={f"node_{i}": 0.01}).remote()
            for i, n in enumerate(line.split()) if float(n)]
    ray.get([h.ready.remote() for h in more])
    held += more
    print("holding", flush=True)
"""


@contextlib.contextmanager
def another_driver(env: dict[str, str]) -> Iterator[Callable[..., None]]:
    """Another driver of the cluster (one for the whole test: a driver start is seconds);
    ``hold(*cpus)`` makes it hold ``cpus[i]`` more CPUs of node i until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOG],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    asks, answers = proc.stdin, proc.stdout
    assert asks is not None and answers is not None

    def hold(*cpus: float) -> None:
        asks.write(" ".join(map(str, cpus)) + "\n")
        asks.flush()
        # A run stopped for its stall must leave nothing reserved: the CPUs are free to take.
        assert select.select([answers], [], [], 90)[0], "the CPUs were never free"
        assert answers.readline().strip() == "holding"

    try:
        yield hold
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stalls(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=240, env=env, check=False)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr.strip().splitlines()[-1]


# A short stall limit: nothing can start here, so no limit is too short to be reached, and each
# second of it is a second of the suite (the defaults, 600 s and 300 s, are for real clusters).
STALL_S = 5


def test_a_run_a_busy_cluster_cannot_start_fails_once_nothing_moves(
    cluster: LocalCluster, env: dict[str, str], spread_run: tuple[str, set[str]]
) -> None:
    """Not the hour of ``timeout_s``: no heartbeat from a worker or an actor for the stall limit
    ends the wait, in one line saying what stalled and what Ray's CPUs are doing."""
    with another_driver(env) as hold:
        hold(2, 1)  # one CPU left: Ray Data's tasks run, 2 Train workers of 1.5 CPUs cannot start
        start = time.monotonic()
        line = stalls(
            env, "train", TAXI, "--set", "scaling.num_workers=2", "--set", "data.rows=5000",
            "--set", f"train.stall_timeout_s={STALL_S}",
        )  # fmt: skip
        assert f"the Ray Train run made no progress for {STALL_S} s (nothing since it started)" in line, line
        assert "Ray has 1 of 4 CPUs free" in line and "train.stall_timeout_s" in line, line
        assert time.monotonic() - start < 120  # Ray Train alone gives up after 3 failed starts of 60 s
        line = stalls(
            env, "tune", TAXI, "--set", "data.rows=5000", "--set", "scaling.num_workers=1",
            "--set", "tune.num_samples=2", "--set", "tune.max_concurrent=2",
            "--set", f"train.stall_timeout_s={STALL_S}",
        )  # fmt: skip
        assert f"the search made no progress for {STALL_S} s (nothing since it started)" in line, line
        hold(0, 1)  # no CPU left: the prediction pool cannot start
        line = stalls(
            env, "predict", TAXI, "--model", run_of(spread_run), "--set", "data.rows=5000",
            "--set", "predict.engine=ray", "--set", f"predict.stall_timeout_s={STALL_S}",
        )  # fmt: skip
        assert f"batch inference made no progress for {STALL_S} s" in line and "Ray has 0 of 4 CPUs free" in line, line


def test_submit_runs_the_command_as_a_ray_job(cluster: LocalCluster, env: dict[str, str], shared_home: Path) -> None:
    """`rayline submit` from a machine without RAY_ADDRESS: the job's output streams, the run lands
    in the registry the submitter named (RAYLINE_HOME travels with the job)."""
    submitter = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    out = rayline(submitter, "submit", TAXI, "train", "--address", cluster.dashboard, "--set", "data.rows=5000")
    assert "Running entrypoint for job" in out, out  # the job's own output, streamed
    job_line = out.strip().splitlines()[-1]
    assert job_line.startswith("job raysubmit_") and " succeeded  run " in job_line, out
    run_id = job_line.split()[-1]
    shown = rayline(submitter, "runs", "show", run_id)
    assert run_id in shown and "rayline.kind = train" in shown, shown


def test_a_failed_job_exits_non_zero_with_its_error(cluster: LocalCluster, env: dict[str, str], tmp_path: Path) -> None:
    empty = {**{k: v for k, v in env.items() if k != "RAY_ADDRESS"}, "RAYLINE_HOME": str(tmp_path / "empty")}
    done = subprocess.run(
        [str(SCRIPT), "submit", TAXI, "predict", "--address", cluster.dashboard],
        capture_output=True, text=True, timeout=180, env=empty, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job raysubmit_") and " failed: " in last, done.stderr
    assert "no trained model for spec 'taxi'" in last, last  # the job's own error, as its one line


@pytest.fixture(scope="module")
def served(
    cluster: LocalCluster, shared_home: Path, spread_run: tuple[str, set[str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], set[str]]:
    """`rayline serve` of the spread run with 2 replicas: (its answer to RECORDS, the replicas' nodes)."""
    env = cluster_env(cluster, shared_home)
    before = actors(cluster, "ServeReplica")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", TAXI, "--model", run_of(spread_run), "--port", str(port),
             "--set", "serve.num_replicas=2"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(OSError):  # not listening yet
                if call(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            time.sleep(0.25)
        status, body = call(f"http://127.0.0.1:{port}/predict", RECORDS)
        assert status == 200 and len(body["predictions"]) == 3, body
        nodes = new_nodes(cluster, "ServeReplica", before)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    noise = [line for line in log.read_text().splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise[:5]
    return body, nodes


RECORDS = json.dumps([TAXI_RECORD, {**TAXI_RECORD, "trip_distance": 9.5}, {**TAXI_RECORD, "hour": 3}]).encode()


def run_of(trained: tuple[str, set[str]]) -> str:
    return trained[0].split()[1]  # "run <id>  (ray-train:2, ...)"


def test_serve_replicas_on_both_nodes(served: tuple[dict[str, Any], set[str]]) -> None:
    assert len(served[1]) == 2


def test_serve_deploy_of_the_printed_config_answers_as_rayline_serve(
    cluster: LocalCluster,
    env: dict[str, str],
    spread_run: tuple[str, set[str]],
    served: tuple[dict[str, Any], set[str]],
    tmp_path: Path,
) -> None:
    """Production serving with no rayline process: Ray's own `serve deploy` sends the printed config
    to the cluster's dashboard, the cluster builds the application (the config names the registry)
    and its proxies answer exactly as `rayline serve` did for the same run."""
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        rayline(env, "serve", TAXI, "--model", run_of(spread_run), "--host", "127.0.0.1", "--port", str(port),
                "--set", "serve.num_replicas=2", "--print-config")
    )  # fmt: skip
    submitter = {k: v for k, v in env.items() if k not in {"RAY_ADDRESS", "RAYLINE_HOME"}}  # all in the config
    deploy = subprocess.run(
        [str(SCRIPT.with_name("serve")), "deploy", str(config), "--address", cluster.dashboard],
        capture_output=True, text=True, timeout=120, env=submitter, check=False,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    try:
        deadline, status, body = time.monotonic() + 180, 0, None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # the proxy is not listening yet
                status, body = call(f"http://127.0.0.1:{port}/predict", RECORDS)
                if status == 200:
                    break
            time.sleep(0.25)
        assert status == 200, (status, body)
        assert body == served[0]  # the same run, the same predictions, to the last digit
    finally:
        shutdown = subprocess.run(
            [str(SCRIPT.with_name("serve")), "shutdown", "--address", cluster.dashboard, "--yes"],
            capture_output=True, text=True, timeout=120, env=submitter, check=False,
        )  # fmt: skip
        assert shutdown.returncode == 0, shutdown.stdout + shutdown.stderr


# ------------------------------------------------------------- state every node can reach
# On a multi-node cluster every node must reach the registry and the Train/Tune storage: a real
# MLflow tracking server (SQLite backend, artifacts proxied) works; a registry or storage on this
# machine's disk is refused in seconds, with one line saying what to set.
MLFLOW = Path(sys.executable).with_name("mlflow")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Iterator[str]:
    """``mlflow server``: a SQLite backend and artifacts it proxies, as a team would run it. Its
    database starts as a copy of a migrated empty store (the migrations are seconds of its start)."""
    root = tmp_path_factory.mktemp("mlflow")
    shutil.copyfile(empty_store, root / "mlflow.db")
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        # No job runner (a process of its own, for MLflow's server-side jobs): rayline sends none.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def user_env(cluster: LocalCluster, home: Path, **extra: str) -> dict[str, str]:
    """No RAYLINE_SHARED_DISK: what a user on a real cluster has."""
    return {**cluster.env(), "RAY_ADDRESS": cluster.address, "RAYLINE_HOME": str(home), **extra}


def fails_fast(env: dict[str, str], *args: str) -> str:
    start = time.monotonic()
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - start < 30
    return done.stderr.strip().splitlines()[-1]


def test_a_registry_on_this_machine_is_refused(cluster: LocalCluster, rayline_home: Path) -> None:
    line = fails_fast(user_env(cluster, rayline_home), "train", TAXI, "--set", "scaling.num_workers=2")
    assert "joins a cluster of 2 nodes and the run registry (sqlite under" in line, line
    assert "MLFLOW_TRACKING_URI" in line and "RAYLINE_SHARED_DISK=1" in line


def test_the_registry_on_a_tracking_server(cluster: LocalCluster, tracking: str, rayline_home: Path) -> None:
    env = user_env(cluster, rayline_home, MLFLOW_TRACKING_URI=tracking)
    out = rayline(env, "train", TAXI, "--set", "data.rows=5000")  # in process: the run goes to the server
    run_id = out.split()[1]
    assert run_id in rayline(env, "runs", "show", run_id)
    # The pool's actors get the checkpoint the driver fetched from the server, not a path of its.
    out = rayline(env, "predict", TAXI, "--set", "data.rows=5000", "--set", "predict.engine=ray", "--model", run_id)
    assert f"model {run_id}" in out and "Ray actor pool" in out, out
    # Ray Train's workers would write checkpoints into a folder of their own node: refused.
    line = fails_fast(env, "train", TAXI, "--set", "scaling.num_workers=2")
    assert "the Train/Tune storage (" in line and "RAYLINE_STORAGE" in line, line


def test_ray_train_keeps_its_checkpoints_on_s3(
    cluster: LocalCluster, tracking: str, s3: dict[str, str], rayline_home: Path
) -> None:
    """With RAYLINE_STORAGE on S3 the workers write their checkpoints there; the run's final
    checkpoint reaches the registry (the tracking server), and the pool predicts from it."""
    env = user_env(cluster, rayline_home, MLFLOW_TRACKING_URI=tracking, RAYLINE_STORAGE=f"s3://{BUCKET}/train")
    with watching("train/") as seen:
        out = rayline(env, "train", TAXI, "--set", "scaling.num_workers=2", "--set", "data.rows=20000")
    assert "(ray-train:2" in out, out
    assert any("/checkpoint_" in key for key in seen), sorted(seen)[:20]
    assert stored(s3, "train/") <= {"train/"}  # cleared once the run is registered (the prefix's marker stays)
    run_id = out.split()[1]
    out = rayline(env, "predict", TAXI, "--set", "data.rows=5000", "--set", "predict.engine=ray", "--model", run_id)
    assert f"model {run_id}" in out and "Ray actor pool" in out, out
