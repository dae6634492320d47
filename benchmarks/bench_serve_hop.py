"""What one call between deployments costs: a Serve handle call vs a plain Ray actor call.

Image serving composes three deployments (ingress -> preprocessor -> model), so every group of
requests pays two Serve handle calls on top of its forward pass. This measures one such call on
its own: a caller replica awaits a do-nothing deployment that echoes a 16-digit uint8 batch, one
call at a time, with the Serve settings ``rayline serve`` uses (user code and handle routers on
each replica's event loop). Beside it, the same echo as a Ray actor method (what a Serve call is
built on) and as a local coroutine. Rounds alternate; medians are printed.

    .venv/bin/python benchmarks/bench_serve_hop.py            # 300 calls x 5 rounds
    .venv/bin/python benchmarks/bench_serve_hop.py --calls 100 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import ray
from common import median, table
from ray import serve

from rayline.serving.runner import ONE_LOOP, RAY_ONLY


class Echo:
    async def __call__(self, x: Any) -> Any:
        return x


@serve.deployment(name="echo", ray_actor_options={"num_cpus": 0.1})
class EchoDeployment(Echo):
    pass


EchoActor = ray.remote(num_cpus=0.1)(Echo)


@serve.deployment(name="caller", ray_actor_options={"num_cpus": 0.1})
class Caller:
    def __init__(self, echo: Any) -> None:
        self.handle, self.actor, self.local = echo, EchoActor.remote(), Echo()

    async def run(self, how: str, calls: int) -> tuple[float, float]:
        """Mean wall and caller-CPU milliseconds per call."""
        batch = np.zeros((16, 1, 28, 28), np.uint8)
        call = {
            "serve handle": lambda: self.handle.remote(batch),
            "ray actor": lambda: self.actor.__call__.remote(batch),
            "local await": lambda: self.local(batch),
        }[how]
        for _ in range(20):
            await call()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await call()
        return 1000 * (time.perf_counter() - wall) / calls, 1000 * (time.process_time() - cpu) / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ray.init(
        num_cpus=min(2, os.cpu_count() or 2),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {**ONE_LOOP, **RAY_ONLY}},
    )
    try:
        caller = serve.run(Caller.bind(EchoDeployment.bind()), name="hop", route_prefix=None)
        kinds = ["serve handle", "ray actor", "local await"]
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind in kinds:
                runs[kind].append(caller.run.remote(kind, args.calls).result())
    finally:
        serve.shutdown()
        ray.shutdown()
    actor_wall = median([w for w, _ in runs["ray actor"]])
    rows = [
        [k, median([w for w, _ in r]), median([c for _, c in r]), median([w for w, _ in r]) / actor_wall]
        for k, r in runs.items()
    ]
    print(f"{args.calls} sequential calls x {args.rounds} rounds, a 16x1x28x28 uint8 batch each way")
    print(table(["call", "wall ms", "caller CPU ms", "x ray actor"], rows))


if __name__ == "__main__":
    main()
