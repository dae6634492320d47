"""rayline predict killed mid-run (SIGKILL, by PID, a real subprocess) and run again with
--resume gives the uninterrupted run's output: no row lost, none written twice, and the parts
the killed run finished are not predicted again. On both engines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import tablesets
from inprocess import rayline_here
from rayline.stages.train import train

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).with_name("rayline")
PARTS = 300  # of 1,000 rows each: enough that a kill lands mid-run


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a pool's Ray processes)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


@pytest.fixture
def job(tmp_path: Path, rayline_home: Path) -> tuple[Path, str, Path]:
    """(spec file, model run id, a 300,000-row input in 300 row groups)."""
    source = tablesets.make_table("regression", tmp_path / "data")
    raw = tablesets.spec_dict("regression", source, name="resume")
    spec_file = tmp_path / "resume.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    run_id = train(tablesets.spec_for("regression", source, name="resume")).run_id
    big = tmp_path / "big.parquet"
    rows = tablesets.regression_frame(rows=PARTS * 1000, seed=5)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), big, row_group_size=1000)
    return spec_file, run_id, big


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_killed_predict_resumes(
    engine: str, job: tuple[Path, str, Path], tmp_path: Path, ray_session: object, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file, run_id, big = job
    args = ["predict", str(spec_file), "--model", run_id, "--input", str(big)]
    args += ["--set", "predict.part_rows=1000", "--set", f"predict.engine={engine}"]

    code, said, err = rayline_here(capsys, *args, "--out", str(tmp_path / "whole.parquet"))
    assert code == 0, err
    whole = pd.read_parquet(tmp_path / "whole.parquet")
    assert len(whole) == PARTS * 1000

    target = tmp_path / "killed.parquet"
    folder = tmp_path / ".killed.parquet.partial"
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(SCRIPT), *args, "--out", str(target)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAYLINE_NUM_CPUS": "2"},
            start_new_session=True,
        )
    left: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while len(list(folder.glob("part-*.parquet"))) < 3:
            assert proc.poll() is None, f"rayline predict ended ({proc.returncode}) first:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no part written in 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.01)
        left = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        for pid in left:  # its Ray, if any: not to write on after the kill, nor slow the next tests
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not target.exists()  # nothing renamed into place by a run that did not finish
    listed = [json.loads(line) for line in (folder / "_parts.jsonl").read_text().splitlines()[1:]]
    assert 0 < len(listed) < PARTS
    kept = {d["part"]: (folder / f"part-{d['part']:05d}.parquet").stat().st_mtime_ns for d in listed}

    code, said, err = rayline_here(capsys, *args, "--out", str(target), "--resume")
    assert code == 0, err
    assert f"wrote {PARTS * 1000:,} rows" in said
    assert not folder.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(target), whole)  # every row once, in the input's order
    for part, mtime in kept.items():  # the killed run's parts were kept, not predicted again
        assert (target / f"part-{part:05d}.parquet").stat().st_mtime_ns == mtime


def test_without_resume_a_partial_job_starts_over(
    job: tuple[Path, str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file, run_id, big = job
    args = ["predict", str(spec_file), "--model", run_id, "--input", str(big), "--set", "predict.engine=local"]
    stale = tmp_path / ".out.parquet.partial"
    stale.mkdir()
    (stale / "_parts.jsonl").write_text('{"job": "another"}\n{"part": 0, "rows": 5, "bad": 0}\n')
    (stale / "part-00000.parquet").write_text("not parquet")
    code, _, err = rayline_here(capsys, *args, "--out", str(tmp_path / "out.parquet"), "--resume")
    assert code == 0, err
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == PARTS * 1000  # another job's parts are not reused
