"""Serve configs and KubeRay manifests from a spec: accepted by Ray's own config schema and by the
KubeRay CRDs' openAPIV3Schema (../shared/kuberay, copied from the KubeRay repository)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from rayline.deploy import rayjob, rayservice, serve_config
from rayline.serving.app import BUILDER, BuildArgs
from rayline.spec import load_spec, spec_from_dict

REPO = Path(__file__).resolve().parents[2]
CRDS = Path(os.environ.get("RAYLINE_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay"))


def crd_schema(kind: str) -> dict[str, Any]:
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    if not path.is_file():
        pytest.skip(f"no KubeRay CRD at {path} (set RAYLINE_KUBERAY_CRDS)")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def validate(manifest: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(manifest, crd_schema(manifest["kind"]))


@pytest.mark.parametrize("example", ["taxi.yaml", "mnist.yaml"])
def test_serve_config_is_what_ray_accepts(example: str) -> None:
    from ray.serve.schema import ServeDeploySchema

    spec = load_spec(REPO / "examples" / example)
    config = serve_config(spec, model="best")
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(yaml.safe_dump(config)))
    app = parsed.applications[0]
    assert app.import_path == BUILDER and app.name == spec.name and app.route_prefix == "/"
    args = BuildArgs.model_validate(app.args)
    assert args.model == "best" and args.spec["name"] == spec.name
    assert parsed.grpc_options is None or not parsed.grpc_options.grpc_servicer_functions


def test_serve_config_with_grpc_names_the_protocols_servicer() -> None:
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    spec = load_spec(REPO / "examples" / "taxi.yaml", ["serve.grpc_port=9000"])
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(yaml.safe_dump(serve_config(spec, model="best"))))
    assert parsed.grpc_options is not None and parsed.grpc_options.port == 9000
    # the import path Ray's gRPC proxy resolves: it must be a callable here too
    (servicer,) = gRPCOptions(**parsed.grpc_options.model_dump()).grpc_servicer_func_callable
    assert servicer.__name__ == "add_servicer"


@pytest.mark.parametrize("example", ["taxi.yaml", "mnist.yaml"])
def test_rayservice_validates_against_the_crd(example: str) -> None:
    spec = load_spec(REPO / "examples" / example)
    manifest = rayservice(spec, model="best", image="rayline:test", tracking_uri="http://mlflow:5000")
    validate(manifest)
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert config["applications"][0]["import_path"] == BUILDER
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    serve = spec.serve
    assert workers["replicas"] == (serve.num_replicas or (serve.autoscaling.max_replicas if serve.autoscaling else 1))
    env = workers["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in env


def test_rayjob_runs_the_spec_from_a_configmap_and_validates() -> None:
    path = REPO / "examples" / "taxi.yaml"
    spec = load_spec(path, ["scaling.num_workers=2", "scaling.cpus_per_worker=2"])
    configmap, job = rayjob(spec, image="rayline:test", tracking_uri=None)
    validate(job)
    assert job["spec"]["entrypoint"] == "rayline run /rayline/spec.yaml"
    assert spec_from_dict(yaml.safe_load(configmap["data"]["spec.yaml"])) == spec  # overrides included
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["configMap"]["name"] == configmap["metadata"]["name"]
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 2
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2"


def test_a_manifest_the_crd_refuses_is_caught() -> None:
    """The validation can fail: a RayService whose serveConfigV2 is not a string."""
    import jsonschema

    spec = load_spec(REPO / "examples" / "taxi.yaml")
    manifest = rayservice(spec, model="best", image="rayline:test", tracking_uri=None)
    manifest["spec"]["serveConfigV2"] = {"applications": []}
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest)


def test_the_k8s_command_writes_both_manifests(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).with_name("rayline")
    spec = REPO / "examples" / "taxi.yaml"
    done = subprocess.run(
        [
            str(script),
            "k8s",
            str(spec),
            "--image",
            "rayline:test",
            "--out",
            str(tmp_path),
            "--set",
            "scaling.num_workers=3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    )
    assert done.returncode == 0, done.stderr
    configmap, job = yaml.safe_load_all((tmp_path / "taxi-rayjob.yaml").read_text())
    service = yaml.safe_load((tmp_path / "taxi-rayservice.yaml").read_text())
    validate(job)
    validate(service)
    assert configmap["kind"] == "ConfigMap" and "scaling" in yaml.safe_load(configmap["data"]["spec.yaml"])
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 3
    assert yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]["model"] == "best"


def test_the_k8s_command_names_a_folder_it_cannot_make(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "deploy"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("rayline")), "k8s", str(REPO / "examples" / "taxi.yaml"),
         "--image", "rayline:test", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"error: cannot create folder {out}: {tmp_path / 'a-file'} is a file", done.stderr
    assert done.stdout == ""
