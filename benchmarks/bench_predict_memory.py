"""rayline predict on the actor pool with a table several times larger than Ray's object store:
the peak RSS of every process of the command (the driver, Ray's GCS and raylet, each actor).

A taxi model is trained once; ``rayline data taxi --rows N`` writes the input; then
``rayline predict examples/taxi.yaml --set predict.engine=ray`` runs with
``RAYLINE_OBJECT_STORE_MB`` (default 100) while /proc is sampled every 0.1 s for each process
under the command (its session). Prints the table's size in memory (Arrow), the store's size and a
markdown table of each process's peak RSS.

    .venv/bin/python benchmarks/bench_predict_memory.py --rows 5000000 --store-mb 100
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from common import BIN, REPO, table

PAGE = os.sysconf("SC_PAGE_SIZE")


def sample(session: int, peaks: dict[int, tuple[str, int]]) -> None:
    """Each process of ``session``: its peak resident memory so far, and its name."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # field 6 of stat: the session id
                continue
            rss = int((entry / "statm").read_text().split()[1]) * PAGE
            name = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
        except (OSError, IndexError, ValueError):
            continue
        pid = int(entry.name)
        old = peaks.get(pid, ("", 0))
        peaks[pid] = (name if name.strip() else old[0], max(old[1], rss))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--store-mb", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rl-bench-memory-") as name:
        tmp = Path(name)
        env = {**os.environ, "RAYLINE_NUM_CPUS": "2", "RAYLINE_HOME": str(tmp / "home")}
        spec = str(REPO / "examples" / "taxi.yaml")
        said = subprocess.run([str(BIN / "rayline"), "train", spec], env=env, capture_output=True, text=True).stdout
        found = re.search(r"\brun ([0-9a-f]{32})\b", said)
        if found is None:
            raise SystemExit(f"no run id:\n{said}")
        source = tmp / "taxi.parquet"
        subprocess.run([str(BIN / "rayline"), "data", "taxi", "--rows", str(args.rows), "--out", str(source)], env=env)
        import pyarrow.parquet as pq

        in_memory = pq.read_table(source).nbytes
        cmd = [str(BIN / "rayline"), "predict", spec, "--model", found.group(1), "--input", str(source)]
        cmd += ["--out", str(tmp / "out.parquet"), "--set", "predict.engine=ray"]
        env["RAYLINE_OBJECT_STORE_MB"] = str(args.store_mb)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        peaks: dict[int, tuple[str, int]] = {}
        while proc.poll() is None:
            sample(proc.pid, peaks)
            time.sleep(0.1)
        wall = time.perf_counter() - start
        out = proc.stdout.read() if proc.stdout else ""
        if proc.returncode != 0 or f"wrote {args.rows:,} rows" not in out:
            raise SystemExit(f"rayline predict failed ({proc.returncode}):\n{out}")
    rows = sorted(((n, rss / 1e9) for n, rss in peaks.values()), key=lambda r: -r[1])
    print(
        f"{args.rows:,} rows, {in_memory / 1e9:.2f} GB in memory (Arrow); "
        f"object store {args.store_mb} MiB; {wall:.1f} s"
    )
    print(table(["process", "peak RSS GB"], [[n.strip() or "?", gb] for n, gb in rows if gb > 0.02]))


if __name__ == "__main__":
    main()
