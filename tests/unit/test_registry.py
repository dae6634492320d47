"""The registry against a real MLflow tracking store (SQLite in a temp folder)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rayline import RegistryError, spec_from_dict
from rayline.registry import Registry

SPEC = spec_from_dict(
    {"name": "reg", "data": {"source": "builtin:taxi", "label": "is_big_tip"}, "model": {"family": "xgboost"}}
)


@pytest.fixture
def registry(rayline_home: Path) -> Registry:
    return Registry(rayline_home)  # its store migrated already (tests/conftest.py)


def train_run(registry: Registry, tmp_path: Path, loss: float, *, model: bool = True) -> str:
    ckpt = tmp_path / f"ckpt-{loss}"
    ckpt.mkdir()
    (ckpt / "model.ubj").write_bytes(b"booster")
    with registry.start_run("reg", kind="train", family="xgboost", spec=SPEC) as run:
        run.log_params({"max_depth": 4, "nested": {"eta": 0.1}})
        run.log_history([{"round": i, "valid_loss": loss + 1.0 / (i + 1)} for i in range(50)], step_key="round")
        run.log_metrics({"valid_loss": loss})
        if model:
            run.log_checkpoint(ckpt)
        return run.run_id


def test_empty_registry(registry: Registry) -> None:
    assert registry.list_runs() == []
    with pytest.raises(RegistryError, match="no trained model for spec 'reg'"):
        registry.resolve("reg", "best", metric="valid_loss", mode="min")


def test_log_and_read_back(registry: Registry, tmp_path: Path) -> None:
    run_id = train_run(registry, tmp_path, 0.5)
    record = registry.get(run_id)
    assert record.experiment == "reg" and record.kind == "train" and record.family == "xgboost"
    assert record.status == "FINISHED" and record.has_model
    assert record.params == {"max_depth": "4", "nested.eta": "0.1"}
    assert record.metrics["valid_loss"] == pytest.approx(0.5)
    assert record.tags["rayline.spec_hash"] == SPEC.fingerprint()
    history = registry.client.get_metric_history(run_id, "valid_loss")
    assert len(history) == 51
    ckpt = registry.checkpoint_dir(run_id)
    assert (ckpt / "model.ubj").read_bytes() == b"booster"
    assert (Path(record.artifact_uri.removeprefix("file://")) / "spec.yaml").is_file()


def test_resolve_best_latest_and_id(registry: Registry, tmp_path: Path) -> None:
    good = train_run(registry, tmp_path, 0.2)
    newest = train_run(registry, tmp_path, 0.4)
    train_run(registry, tmp_path, 0.01, model=False)  # no checkpoint: never servable
    assert registry.resolve("reg", "best", metric="valid_loss", mode="min").run_id == good
    assert registry.resolve("reg", "best", metric="valid_loss", mode="max").run_id == newest
    assert registry.resolve("reg", "latest", metric="valid_loss", mode="min").run_id == newest
    assert registry.resolve("reg", good, metric="valid_loss", mode="min").run_id == good
    assert registry.get(good[:8]).run_id == good


def test_failed_run_is_marked_and_not_servable(registry: Registry, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.ubj").write_bytes(b"x")
    with pytest.raises(ValueError), registry.start_run("reg", kind="train", family="xgboost") as run:
        run.log_checkpoint(ckpt)
        raise ValueError("training blew up")
    assert registry.get(run.run_id).status == "FAILED"
    with pytest.raises(RegistryError, match="no trained model"):
        registry.resolve("reg", "latest", metric="valid_loss", mode="min")


def test_parent_child_and_kind_filter(registry: Registry) -> None:
    with registry.start_run("reg", kind="tune", family="xgboost") as parent:
        for i in range(3):
            with registry.start_run("reg", kind="trial", family="xgboost", parent_id=parent.run_id) as trial:
                trial.log_metrics({"valid_loss": i})
    trials = registry.list_runs("reg", kind="trial")
    assert len(trials) == 3 and all(t.parent_id == parent.run_id for t in trials)
    assert [r.run_id for r in registry.list_runs("reg", kind="tune")] == [parent.run_id]


def test_unknown_ids(registry: Registry, tmp_path: Path) -> None:
    train_run(registry, tmp_path, 0.3)
    with pytest.raises(RegistryError, match="no run with id"):
        registry.get("0" * 32)
    with pytest.raises(RegistryError, match="no run with id or alias 'zzzzzzzz'"):
        registry.get("zzzzzzzz")
    with pytest.raises(RegistryError, match="no run with id 'abcdef'"):
        registry.get("abcdef")
    with pytest.raises(RegistryError, match="prefix 'abc' is too short: give 6 or more"):
        registry.resolve("reg", "abc", metric="valid_loss", mode="min")
    with pytest.raises(RegistryError, match="spec 'reg' has no model with alias 'champion'"):
        registry.resolve("reg", "champion", metric="valid_loss", mode="min")


def test_aliases_name_versions_and_resolve_like_run_ids(registry: Registry, tmp_path: Path) -> None:
    first = train_run(registry, tmp_path, 0.3)
    second = train_run(registry, tmp_path, 0.2)
    assert registry.versions("reg") == [] and registry.alias_run("reg", "champion") is None

    v1 = registry.set_alias(registry.get(first), "champion")
    assert (v1.model, v1.version, v1.run_id, v1.aliases) == ("reg", 1, first, ("champion",))
    registry.set_alias(registry.get(second), "challenger")
    assert registry.resolve("reg", "champion", metric="valid_loss", mode="min").run_id == first
    assert registry.get("challenger").run_id == second  # `runs show`, `report`: any spec's alias
    with pytest.raises(RegistryError, match="spec 'other' has no model with alias 'champion'"):
        registry.resolve("other", "champion", metric="valid_loss", mode="min")  # not another spec's

    # Moving an alias to a run that has a version reuses that version: one version per run.
    moved = registry.set_alias(registry.get(second), "champion")
    assert moved.version == 2 and moved.aliases == ("challenger", "champion")
    assert [(v.version, v.run_id, v.aliases) for v in registry.versions("reg")] == [
        (2, second, ("challenger", "champion")),
        (1, first, ()),
    ]
    assert registry.registered_models() == ["reg"]


def test_a_run_without_a_model_cannot_be_promoted(registry: Registry, tmp_path: Path) -> None:
    bare = train_run(registry, tmp_path, 0.1, model=False)
    with pytest.raises(RegistryError, match="has no model checkpoint to promote"):
        registry.set_alias(registry.get(bare), "champion")
    with pytest.raises(RegistryError, match="not usable"):
        registry.set_alias(registry.get(bare), "best")


def test_a_tracking_server_that_does_not_answer_fails_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own retries would sit silent for minutes: a refused connection or a server that
    never answers is one line naming the server; any HTTP answer (a 404 too) is a server."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rayline import registry as registry_module
    from rayline.registry import open_registry

    monkeypatch.setattr(registry_module, "REACH_TIMEOUT_S", 0.5)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", refused)
    with pytest.raises(
        RegistryError, match=f"cannot reach the MLflow tracking server at {refused}: connection refused"
    ):
        open_registry(tmp_path / "home")

    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mute)
        with pytest.raises(RegistryError, match=r"no answer within 0\.5 s"):
            open_registry(tmp_path / "home")

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answering = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", answering)
        assert open_registry(tmp_path / "home").tracking_uri == answering
    finally:
        server.shutdown()


def test_a_home_that_cannot_be_made_names_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rayline.registry import open_registry

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("RAYLINE_HOME", str(tmp_path / "a-file" / "home"))
    with pytest.raises(
        RegistryError, match=r"RAYLINE_HOME .*a-file/home: cannot create the folder \(Not a directory\)"
    ):
        open_registry()


@pytest.fixture
def tracking_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[tuple[int, str, str]]]]:
    """A tracking server that answers every call with ``answer[0]``: (status, MLflow error code,
    message). MLflow's retries are off, so a 500 fails at once."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    answer = [(500, "INTERNAL_ERROR", "the database is down")]

    class Answer(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            status, code, message = answer[0]
            body = json.dumps({"error_code": code, "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer
    finally:
        server.shutdown()


def test_a_broken_tracking_server_raises_naming_the_operation(
    tmp_path: Path, tracking_server: tuple[str, list[tuple[int, str, str]]]
) -> None:
    """Only MLflow's "does not exist" reads as absent: a server that fails is never "no spec.yaml"
    nor "no run with that id"."""
    uri, answer = tracking_server
    registry = Registry(tmp_path / "home", uri)
    run_id = "a" * 32
    at = re.escape(f"(registry at {uri})")
    with pytest.raises(RegistryError, match=f"could not read spec.yaml of run {run_id} {at}: .*"):
        registry.read_text(run_id, "spec.yaml")
    with pytest.raises(RegistryError, match=f"could not read spec.yaml of run {run_id} {at}"):
        registry.spec_of(run_id)
    with pytest.raises(RegistryError, match=f"could not read run {run_id} {at}"):
        registry.get(run_id)
    with pytest.raises(RegistryError, match=f"could not list the experiments {at}"):
        registry.list_runs()
    with pytest.raises(RegistryError, match=f"could not list the versions of model 'reg' {at}"):
        registry.versions("reg")
    with pytest.raises(RegistryError, match=f"could not read alias 'champion' of model 'reg' {at}"):
        registry.alias_run("reg", "champion")

    answer[0] = (404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found")
    with pytest.raises(RegistryError, match=f"no run with id '{run_id}'"):
        registry.get(run_id)
    assert registry.read_text(run_id, "spec.yaml") is None


def test_a_broken_store_file_names_the_operation(tmp_path: Path) -> None:
    home = tmp_path / "broken"
    home.mkdir()
    (home / "mlflow.db").write_bytes(b"not a database" * 100)
    with pytest.raises(RegistryError, match=r"could not open the tracking store \(registry at sqlite:.*mlflow\.db\)"):
        Registry(home).list_runs()


def test_a_missing_artifact_reads_as_absent(registry: Registry, tmp_path: Path) -> None:
    with registry.start_run("reg", kind="train", family="xgboost") as run:  # no spec: no spec.yaml
        run.log_metrics({"valid_loss": 0.5})
    assert registry.read_text(run.run_id, "spec.yaml") is None
    with pytest.raises(RegistryError, match=f"run {run.run_id} has no spec.yaml"):
        registry.spec_of(run.run_id)
    assert registry.read_text(train_run(registry, tmp_path, 0.4), "spec.yaml") is not None
