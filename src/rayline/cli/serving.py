"""Serving and deploying: verify, serve, k8s (KubeRay manifests), submit (a Ray job on a cluster)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rayline.cli.shared import ModelOpt, SetOpt, SpecArg, err, out
from rayline.errors import DataError, SpecError
from rayline.progress import progress_status


def verify_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    rows: Annotated[int, typer.Option("--rows", min=1, help="validation rows sent down every path")] = 200,
    path: Annotated[
        list[str] | None,
        typer.Option("--path", help="only these paths (repeatable): local, pool, http, rest, grpc, mlflow"),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """The same rows through every way of asking the model; exit 1 naming the first row that differs."""
    import ray

    from rayline.serving.runner import shutdown
    from rayline.spec import load_spec
    from rayline.verify import verify

    loaded = load_spec(spec, set_ or [])
    ours = not ray.is_initialized()  # a caller's own Ray (a notebook, the tests) is left running
    try:
        with progress_status(err, f"verifying {loaded.name} model {model}") as status:
            result = verify(
                loaded, model=model, rows=rows, paths=path, on_path=lambda name: status.update(name, stage=True)
            )
    finally:
        if ours:
            shutdown()  # the embedded Ray this command started, and the service's ingress
    table = Table("path", "rows", "max |diff|", "seconds", "", show_edge=False)
    for p in result.paths:
        diff = "-" if p.max_diff is None else f"{p.max_diff:.2e}"
        table.add_row(p.path, str(p.rows), diff, f"{p.seconds:.1f}", p.note)
    out.print(table)
    if result.skipped_images:
        out.print(f"{result.skipped_images} undecodable validation images left out (data.on_bad_file: skip)")
    if not result.ok:
        err.print(f"error: {result.failure or result.difference}", markup=False)
        raise typer.Exit(1)
    out.print(f"{result.rows} rows agree to {result.tolerance:g} on every path (model {result.model_run_id})")


def serve_cmd(
    spec: SpecArg,
    model: ModelOpt = "best",
    host: Annotated[str | None, typer.Option("--host", help="interface to listen on (default 127.0.0.1)")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="HTTP port (default 8000; 0 picks a free one)")
    ] = None,
    set_: SetOpt = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="print a Ray Serve config for `serve run` / `serve deploy` instead of serving"
        ),
    ] = False,
    canary: Annotated[
        str | None,
        typer.Option("--canary", help="MODEL:PERCENT, e.g. challenger:10: that share of requests goes to MODEL"),
    ] = None,
    shadow: Annotated[
        str | None,
        typer.Option("--shadow", help="MODEL also answers every request in the background, compared, never returned"),
    ] = None,
) -> None:
    """Serve a registered model over HTTP (FastAPI on Ray Serve) until Ctrl-C."""
    import signal

    from rayline.serving.runner import shutdown, start
    from rayline.spec import load_spec

    loaded = _with_traffic(load_spec(spec, set_ or []), canary, shadow)
    if print_config:
        sys.stdout.write(_serve_config_text(loaded, model, host or "0.0.0.0", port))
        return
    # SIGTERM (docker stop, kill) shuts down as cleanly as Ctrl-C (runtime.init keeps this
    # handler in place when ray.init installs Ray's own).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with progress_status(err, f"starting {loaded.name} service"):
            service = start(loaded, model=model, host=host, port=port)
        out.print(f"serving {loaded.name} model {service.model_run_id}")
        out.print(f"  predict  POST {service.url}/predict")
        out.print(f"  health   GET  {service.url}/healthz")
        out.print(f"  docs          {service.url}/docs")
        out.print(f"  open inference protocol  {service.url}/v2/models/{loaded.name}")
        if service.grpc_address:
            out.print(f"  grpc     {service.grpc_address}  (inference.GRPCInferenceService)")
        out.print(f"  try it        {service.url}/  (in a browser)")
        if service.metrics_url:
            out.print(f"  metrics       {service.metrics_url}  (Prometheus: ray_rayline_model_*)")
        if loaded.serve.canary is not None:
            share = loaded.serve.canary
            out.print(f"  canary   {share.percent:g}% of requests -> {share.model}  (sticky per X-Route-Key header)")
        if loaded.serve.shadow:
            out.print(f"  shadow   {loaded.serve.shadow} answers every request too; agreement in /healthz")
        auto = loaded.serve.autoscaling
        if auto is not None and auto.min_replicas == 0:
            out.print("  idle: no model replica runs until a request comes (serve.autoscaling.min_replicas: 0)")
        out.print("press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        err.print("stopping")
    finally:
        shutdown()


def _with_traffic(spec: Any, canary: str | None, shadow: str | None) -> Any:
    """The spec with ``--canary MODEL:PERCENT`` and ``--shadow MODEL`` applied (checked like the spec)."""
    if canary is None and shadow is None:
        return spec
    from rayline.spec import spec_from_dict

    raw = spec.model_dump(mode="json")
    if canary is not None:
        model, _, percent = canary.rpartition(":")
        try:
            share = float(percent)
        except ValueError:
            share = -1.0
        if not model or ":" in model or not 0 < share <= 100:
            raise SpecError(f"--canary {canary!r}: expected MODEL:PERCENT, a percent in (0, 100], e.g. challenger:10")
        raw["serve"]["canary"] = {"model": model, "percent": share}
    if shadow is not None:
        raw["serve"]["shadow"] = shadow
    return spec_from_dict(raw, origin=f"spec {spec.name}")


def _serve_config_text(spec: Any, model: str, host: str, port: int | None) -> str:
    """The Serve config YAML, for the run ``model`` names now (a config deploys one fixed run)."""
    from rayline.deploy import serve_config, to_yaml
    from rayline.registry import open_registry

    registry = open_registry()
    record = registry.resolve(spec.name, model, metric=spec.metric, mode=spec.mode)
    # The registry travels in the config: the cluster builds the application in a process of its own.
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    where = {"MLFLOW_TRACKING_URI": tracking} if tracking else {"RAYLINE_HOME": str(registry.home)}
    return to_yaml(serve_config(spec, model=record.run_id, host=host, port=port, registry_env=where))


def k8s_cmd(
    spec: SpecArg,
    image: Annotated[str, typer.Option("--image", help="container image with rayline installed")],
    model: ModelOpt = "best",
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking server the pods use (the registry)")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the manifests to")] = Path("deploy"),
    set_: SetOpt = None,
) -> None:
    """Write KubeRay manifests for the spec: a RayJob running `rayline run`, and a RayService serving the model."""
    from rayline.deploy import rayjob, rayservice, to_yaml
    from rayline.spec import load_spec

    loaded = load_spec(spec, set_ or [])
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    job = rayjob(loaded, image=image, tracking_uri=uri)
    # The model selector as given: `best` is resolved where the service is built, in the
    # cluster's registry (the tracking server), which may hold runs this machine has not seen.
    service = rayservice(loaded, model=model, image=image, tracking_uri=uri)
    manifests = {
        out_dir / f"{loaded.name}-rayjob.yaml": to_yaml(*job),
        out_dir / f"{loaded.name}-rayservice.yaml": to_yaml(service),
    }
    for path, text in manifests.items():
        _write_text(path, text)
    written = list(manifests)
    if uri is None:
        err.print("note: no --tracking-uri (or MLFLOW_TRACKING_URI): the pods would use their own local registry")
    if not (loaded.data.is_uri or loaded.data.source.startswith("builtin:")):
        err.print(f"note: data.source {loaded.data.source} is a local path; the pods need a URI (s3://, gs://)")
    for path in written:
        out.print(f"wrote {path}")


def _write_text(path: Path, text: str) -> None:
    """``path`` whole or not at all; a folder that cannot be made or written names itself."""
    from rayline.atomic import atomic_output

    with atomic_output(path) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc.strerror}") from None


def submit_cmd(
    spec: SpecArg,
    command: Annotated[str, typer.Argument(help="run, train, tune, predict or evaluate")] = "run",
    address: Annotated[
        str | None,
        typer.Option("--address", help="the cluster's Jobs API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS)"),
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="print the job id and return")] = False,
    set_: SetOpt = None,
) -> None:
    """Run the spec's command as a Ray job on a cluster; stream its output, exit with its status."""
    from rayline.spec import load_spec
    from rayline.submit import submit

    loaded = load_spec(spec, set_ or [])
    where = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not where or not where.startswith(("http://", "https://")):
        raise SpecError(
            f"--address {where or '(unset)'} is not a Jobs API address",
            hint="pass --address http://HEAD:8265, the cluster's dashboard",
        )
    if "MLFLOW_TRACKING_URI" not in os.environ:
        err.print("note: no MLFLOW_TRACKING_URI: the job registers its runs in the cluster's own RAYLINE_HOME")

    def show(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    done = submit(loaded, command, where, on_output=show, wait=not no_wait)
    if no_wait:
        out.print(f"job {done.job_id}  ({done.status.lower()})")
        return
    runs = f"  run {', '.join(done.run_ids)}" if done.run_ids else ""
    out.print(f"job {done.job_id} succeeded{runs}")
