"""``rayline submit``: a spec's command as a Ray Job on a running cluster (Ray's Jobs API).

The job's working folder holds the spec as loaded (``--set`` values included) and the local
files it reads (``data.source``, ``predict.input``), rewritten to paths inside that folder; a URI
or a built-in dataset travels as it is. The job runs the submitter's own rayline: its package is
uploaded with the job (``py_modules``), so the cluster needs rayline's dependencies, not this
exact version. The registry and storage settings of the submitter's environment go with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rayline.errors import JobError, SpecError, first_line
from rayline.spec import Spec

COMMANDS = ("run", "train", "tune", "predict", "evaluate")
# What the job needs of the submitter's environment: where the registry, results and plugs live.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "RAYLINE_STORAGE",
    "RAYLINE_HOME",
    "RAYLINE_FAMILIES",
    "RAYLINE_VERBOSE",
    "RAYLINE_DEBUG",
    "RAYLINE_SHARED_DISK",
)
# Ray refuses a working folder over 500 MiB; past this much, data belongs in object storage.
MAX_UPLOAD_BYTES = 200 * 1024**2
_RUN_LINE = re.compile(r"\brun ([0-9a-f]{32})\b")


@dataclass
class Submission:
    """A finished job: its id, Ray's final status, and the registry runs its output names."""

    job_id: str
    status: str
    run_ids: list[str] = field(default_factory=list)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def package(spec: Spec, folder: Path) -> Path:
    """Write ``folder/spec.yaml`` and copy the local files the spec reads next to it; returns the spec file."""
    raw: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)  # loads back as the same Spec
    local: dict[tuple[str, str], str] = {}
    if not spec.data.is_uri and not spec.data.source.startswith("builtin:"):
        local[("data", "source")] = spec.data.source
    if spec.predict.input and "://" not in spec.predict.input:
        local[("predict", "input")] = spec.predict.input
    for (section, key), value in local.items():
        source = Path(value).expanduser()
        if not source.exists():
            raise SpecError(f"{section}.{key}: {value} not found", hint="the job's files are read from this machine")
        if _size(source) > MAX_UPLOAD_BYTES:
            raise SpecError(
                f"{section}.{key}: {value} is over {MAX_UPLOAD_BYTES // 1024**2} MiB, too large to send with a job",
                hint="put it in object storage (s3://...) and name that URI",
            )
        target = folder / "inputs" / f"{section}-{key}" / source.name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        raw.setdefault(section, {})[key] = str(target.relative_to(folder))
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def entrypoint(command: str) -> str:
    """The job's shell command: ``rayline COMMAND spec.yaml`` in a copy of the working folder.

    Not in the folder Ray unpacked: once the job's driver joins Ray, Ray lets go of that folder
    and deletes it under the running command (measured: the registry's ``os.getcwd()`` failed).
    """
    return (
        'copy=$(mktemp -d -t rayline-job-XXXXXX) && cp -r . "$copy" && cd "$copy" && '
        f'python -m rayline {command} spec.yaml; status=$?; cd / && rm -rf "$copy"; exit $status'
    )


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    if os.environ.get("RAYLINE_VERBOSE") != "1":  # "Uploading package ...": the job's output is what matters
        quiet = ("dashboard.modules.dashboard_sdk", "dashboard.modules.job.sdk", "_private.runtime_env.packaging")
        for name in (f"ray.{q}" for q in quiet):
            logging.getLogger(name).setLevel(logging.WARNING)

    try:
        return JobSubmissionClient(address)
    except Exception as err:  # ConnectionError, AuthenticationError, ValueError from Ray
        raise JobError(f"could not reach the Ray Jobs API at {address}: {first_line(err)}") from None


def submit(
    spec: Spec,
    command: str,
    address: str,
    *,
    on_output: Callable[[str], None],
    wait: bool = True,
) -> Submission:
    """Submit ``rayline COMMAND spec.yaml`` as a Ray job; stream its output to ``on_output`` until it ends.

    The variables of ``FORWARDED_ENV`` set here go with the job. Ctrl-C stops the job.
    """
    if command not in COMMANDS:
        raise SpecError(f"cannot submit {command!r}: one of {', '.join(COMMANDS)}")
    client = _client(address)
    with tempfile.TemporaryDirectory(prefix="rayline-job-") as tmp:
        package(spec, Path(tmp))
        runtime_env = {
            "working_dir": tmp,
            "py_modules": [str(Path(__file__).resolve().parent)],  # this package's folder
            "env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ},
        }
        try:
            job_id: str = client.submit_job(entrypoint=entrypoint(command), runtime_env=runtime_env)
        except Exception as err:
            raise JobError(f"the Ray Jobs API at {address} refused the job: {first_line(err)}") from None
    if not wait:
        return Submission(job_id, str(client.get_job_status(job_id).value))
    seen: list[str] = []

    async def follow() -> None:
        async for chunk in client.tail_job_logs(job_id):
            seen.append(chunk)
            on_output(chunk)

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        client.stop_job(job_id)
        raise
    status = _final_status(client, job_id)
    runs = list(dict.fromkeys(_RUN_LINE.findall("".join(seen))))
    if status != "SUCCEEDED":
        message = (client.get_job_info(job_id).message or "").strip()
        reason = message.splitlines()[-1] if message else "see its output above"
        raise JobError(f"job {job_id} {status.lower()}: {reason}")
    return Submission(job_id, status, runs)


def _final_status(client: Any, job_id: str, timeout_s: float = 30) -> str:
    """The job's status once terminal (the log stream can end a moment before the status does)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in {"SUCCEEDED", "FAILED", "STOPPED"} or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
