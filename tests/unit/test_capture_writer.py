"""The capture writer (serve.capture): whole files, rolled by size and time, bounded memory, flushed on close."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rayline.data.capture import capture_files, items_of, outputs_of, read_capture
from rayline.data.capture_writer import Answered, CaptureWriter
from rayline.errors import DataError

RECORD = {"trip_distance": 2.5, "hour": 18, "vendor": "a"}


def answered(request_id: str, n: int = 1, role: str = "primary", items: list[object] | None = None) -> Answered:
    return Answered(
        request_id=request_id,
        time_s=time.time(),
        latency_s=0.002,
        model="run1",
        role=role,
        route="/predict",
        items=items if items is not None else [dict(RECORD, hour=i) for i in range(n)],
        results=[{"label": 1, "probability": 0.75}] * (len(items) if items is not None else n),
    )


def test_close_writes_what_is_held_and_it_reads_back(tmp_path: Path) -> None:
    writer = CaptureWriter(str(tmp_path), replica="r1", max_file_s=3600)
    for i in range(5):
        assert writer.offer(answered(f"q{i}", n=2))
    assert writer.offer(answered("q0", n=2, role="shadow"))
    assert capture_files(str(tmp_path)) == []  # nothing due yet: held in memory
    writer.close()
    files = capture_files(str(tmp_path))
    assert len(files) == 1 and Path(files[0]).name.startswith("capture-")
    table = read_capture(str(tmp_path))
    assert table.num_rows == 10  # the shadow's answers are left out by default
    assert read_capture(str(tmp_path), roles=None).num_rows == 12
    assert sorted(set(table.column("request_id").to_pylist())) == [f"q{i}" for i in range(5)]
    assert items_of(table)[1] == dict(RECORD, hour=1)
    assert outputs_of(table)[0] == {"label": 1, "probability": 0.75}
    assert writer.stats()["rows"] == 12 and writer.stats()["files"] == 1
    assert not writer.offer(answered("late"))  # closed: refused, counted
    assert writer.stats()["dropped"] == 1


def test_files_roll_by_size(tmp_path: Path) -> None:
    writer = CaptureWriter(str(tmp_path), replica="r1", max_file_mb=0.001, max_file_s=3600)  # ~1 KB a file
    for i in range(20):
        writer.offer(answered(f"q{i}", n=4))
    writer.close()
    files = capture_files(str(tmp_path))
    assert len(files) > 3, files
    assert read_capture(str(tmp_path)).num_rows == 80
    for name in files:
        pq.read_table(name)  # each one whole


def test_files_roll_by_time(tmp_path: Path) -> None:
    writer = CaptureWriter(str(tmp_path), replica="r1", max_file_s=0.2)
    writer.offer(answered("first"))
    deadline = time.monotonic() + 10
    while not capture_files(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(capture_files(str(tmp_path))) == 1  # written with no close and no size reached
    writer.offer(answered("second"))
    writer.close()
    assert len(capture_files(str(tmp_path))) == 2


def test_memory_is_bounded_past_it_requests_are_dropped_and_counted(tmp_path: Path) -> None:
    big = [np.zeros((3, 64, 64), dtype=np.uint8)] * 8  # ~100 KB a request
    writer = CaptureWriter(str(tmp_path), replica="r1", max_queue_mb=0.25, max_file_s=3600)
    with writer._lock:  # the thread cannot take anything while the lock is held: the queue fills
        taken = [writer.offer(answered(f"q{i}", items=big)) for i in range(10)]
    assert taken[0] and not all(taken)
    writer.close()
    stats = writer.stats()
    assert stats["dropped"] == taken.count(False) > 0
    assert stats["requests"] == taken.count(True)
    assert stats["queued_bytes"] == 0


def test_the_request_only_hands_references_over_the_thread_encodes(tmp_path: Path) -> None:
    """Off the request path: the caller of ``put`` encodes nothing; the writer's thread does."""
    import threading

    encoded_on: list[str] = []

    class Probe:
        def __str__(self) -> str:  # JSON encodes an unknown value with str(): called where it is encoded
            encoded_on.append(threading.current_thread().name)
            return "probe"

    writer = CaptureWriter(str(tmp_path), replica="r1", max_file_s=3600)
    with writer._lock:  # the thread cannot take anything meanwhile: what is encoded now, put encoded
        for i in range(50):
            assert writer.put(f"q{i}", time.time(), 0.001, "run1", "primary", "/predict", [{"x": Probe()}], [{}])
    assert encoded_on == []
    writer.close()
    assert encoded_on == ["rayline-capture"] * 50
    assert items_of(read_capture(str(tmp_path)))[0] == {"x": "probe"}


def test_records_and_answers_are_stored_as_json_numpy_values_plain(tmp_path: Path) -> None:
    record = {"x": np.float32(1.5), "n": np.int64(7), "v": np.arange(3), "name": 'caf\u00e9 "a"', "missing": None}
    answer = {"label": "a", "probability": np.float64(0.25), "probabilities": {"a": 0.25, "b": float("nan")}}
    writer = CaptureWriter(str(tmp_path), replica="r1")
    writer.put("q", time.time(), 0.001, "run1", "primary", "/predict", [record], [answer])
    writer.close()
    table = read_capture(str(tmp_path))
    assert items_of(table) == [{"x": 1.5, "n": 7, "v": [0, 1, 2], "name": 'caf\u00e9 "a"', "missing": None}]
    (out,) = outputs_of(table)
    assert out["label"] == "a" and out["probability"] == 0.25 and np.isnan(out["probabilities"]["b"])
    assert table.column("output")[0].as_py().startswith('{"label":"a","probability":0.25,')  # compact JSON


def test_images_are_stored_as_png_and_come_back_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)
    color = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    writer = CaptureWriter(str(tmp_path), replica="r1")
    writer.offer(answered("g", items=[gray]))
    writer.offer(answered("c", items=[color]))
    writer.close()
    table = read_capture(str(tmp_path))
    assert table.column("image")[0].as_py()[:4] == b"\x89PNG"
    back = items_of(table)
    assert np.array_equal(back[0], gray) and np.array_equal(back[1], color)


def test_a_body_is_decoded_by_the_thread(tmp_path: Path) -> None:
    """The composed ingress hands over bodies; the writer decodes them, off the request path."""
    writer = CaptureWriter(str(tmp_path), replica="r1", decode=lambda body: [dict(r) for r in body])
    request = answered("b")
    request.items, request.is_body = [RECORD], True
    writer.offer(request)
    bad = answered("bad")  # inputs and answers that do not pair up: skipped, counted
    bad.results = []
    writer.offer(bad)
    writer.close()
    assert items_of(read_capture(str(tmp_path))) == [RECORD]
    assert writer.stats()["errors"] == 1


def test_flush_writes_now(tmp_path: Path) -> None:
    writer = CaptureWriter(str(tmp_path), replica="r1", max_file_s=3600)
    writer.offer(answered("q"))
    writer.flush()
    assert len(capture_files(str(tmp_path))) == 1
    writer.close()


def test_a_killed_writer_leaves_no_torn_capture_file(tmp_path: Path) -> None:
    """SIGKILL while files are being written: every capture-*.parquet reads whole; the rows held
    in memory are lost, at most a dot-file is left, and the reader skips it."""
    script = textwrap.dedent(
        f"""
        import time
        from rayline.data.capture_writer import Answered, CaptureWriter
        w = CaptureWriter({str(tmp_path)!r}, replica="r1", max_file_mb=0.05, max_file_s=0.05)
        i = 0
        print("ready", flush=True)
        while True:
            i += 1
            items = [{{"x": float(j), "text": "y" * 200}} for j in range(50)]
            w.offer(Answered(str(i), time.time(), 0.001, "run", "primary", "/predict", items, [{{"label": 1}}] * 50))
            time.sleep(0.001)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30
    while len(capture_files(str(tmp_path))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    finished = capture_files(str(tmp_path))
    assert len(finished) >= 5
    for name in finished:
        assert pq.read_table(name).num_rows > 0
    left = [p.name for p in tmp_path.iterdir() if not p.name.startswith("capture-")]
    assert all(name.startswith(".") for name in left), left
    assert read_capture(str(tmp_path)).num_rows == sum(pq.read_metadata(n).num_rows for n in finished)


def test_reading_a_folder_without_captures_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no capture files"):
        read_capture(str(tmp_path))
    with pytest.raises(DataError, match="no such capture folder"):
        read_capture(str(tmp_path / "missing"))
    (tmp_path / "capture-x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"capture-x\.parquet: not a capture file"):
        read_capture(str(tmp_path))


def test_serve_capture_is_set_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rayline import SpecError, load_spec

    examples = Path(__file__).resolve().parents[2] / "examples"
    assert load_spec(examples / "taxi.yaml").serve.capture is None  # off by default
    monkeypatch.chdir(tmp_path)
    spec = load_spec(examples / "taxi.yaml", ["serve.capture.fraction=1.0", "serve.capture.path=traffic"])
    assert spec.serve.capture is not None and spec.serve.capture.fraction == 1.0
    assert spec.serve.capture.path == str(tmp_path / "traffic")  # absolute: replicas run elsewhere
    uri = load_spec(examples / "taxi.yaml", ["serve.capture.path=s3://bucket/traffic"]).serve.capture
    assert uri is not None and uri.path == "s3://bucket/traffic" and uri.fraction == 0.1
    with pytest.raises(SpecError, match=r"serve\.capture\.path: Field required"):
        load_spec(examples / "taxi.yaml", ["serve.capture.fraction=0.5"])
    with pytest.raises(SpecError, match=r"serve\.capture\.fraction"):
        load_spec(examples / "taxi.yaml", ["serve.capture.path=x", "serve.capture.fraction=2"])
