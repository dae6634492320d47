"""The serving baseline: one plain uvicorn + FastAPI process holding the same booster, no Ray.

python benchmarks/plain_serve.py CHECKPOINT_DIR PORT
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
from rayline.families import get_family


def build(checkpoint: Path) -> FastAPI:
    predictor = get_family("xgboost").load(checkpoint, cpus=1)
    meta = checkpoints.read_meta(checkpoint)
    kind = get_kind(meta["data_kind"])
    body_model = kind.request_model(meta)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        try:
            body = body_model.model_validate_json(await request.body())
        except ValidationError as err:
            return JSONResponse({"error": str(err)}, 422)
        return JSONResponse({"predictions": predictor.predict_items(kind.decode_request(body, meta))})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(
        build(Path(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False
    )
