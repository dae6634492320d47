"""The image-serving baseline: one plain uvicorn + FastAPI process, the same ResNet18 checkpoint, no Ray.

Unbatched: every request is validated with the same body model, decoded, and run as its own
forward pass on the event loop, with ``THREADS`` torch threads, in ``PRECISION`` (float32 or
bfloat16, as rayline's ``serve.precision``).

    python benchmarks/plain_serve_resnet.py CHECKPOINT_DIR PORT [THREADS [PRECISION]]
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from rayline import checkpoints
from rayline.data import get_kind
from rayline.errors import DataError
from rayline.families import get_family


def build(checkpoint: Path, threads: int, precision: str = "float32") -> FastAPI:
    predictor = get_family("resnet18").load(checkpoint, cpus=threads, precision=precision)
    meta = checkpoints.read_meta(checkpoint)
    kind = get_kind(meta["data_kind"])
    body_model = kind.request_model(meta)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            items = kind.decode_request(body_model.model_validate_json(await request.body()), meta)
        except (ValidationError, DataError) as err:
            return JSONResponse({"error": str(err)}, 422)
        return JSONResponse({"predictions": predictor.predict_items(items)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    precision = sys.argv[4] if len(sys.argv) > 4 else "float32"
    uvicorn.run(
        build(Path(sys.argv[1]), threads, precision),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        access_log=False,
    )
