"""Every registered family, the tiny test family included, through the same stages:
train -> batch predict -> serve, with the served answers equal to the batch ones.

Nothing here names a family: each one gets data of the kind it declares, its spec section's
defaults, and the same checks. A new family is covered by registering it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import imagesets
import rayline
import tablesets
from rayline.data import get_kind
from rayline.families import get_family, names
from rayline.spec import spec_from_dict
from service import free_port

SMALL = {"epochs": 1, "batch_size": 32, "num_boost_round": 10}  # applied where a family has the field


def _model_section(name: str) -> dict[str, Any]:
    from rayline.spec import MODEL_SPECS

    cls = next(c for c in MODEL_SPECS if c.model_fields["family"].annotation.__args__[0] == name)
    return {"family": name, **{k: v for k, v in SMALL.items() if k in cls.model_fields}}


def _spec(name: str, tmp_path: Path) -> rayline.Spec:
    kind = get_family(name).data_kind
    if kind == "images":
        source = imagesets.digits(tmp_path / "digits", per_class=16, classes=[1, 7])
        raw: dict[str, Any] = {"data": {"source": str(source), "image": {"mode": "L", "size": [28, 28]}}}
    else:
        source = tablesets.make_table("binary", tmp_path / "data")
        raw = {"data": {"source": str(source), "label": tablesets.LABELS["binary"], "categorical": ["color"]}}
    raw.update(name=f"contract-{name}", model=_model_section(name), serve={"num_replicas": 1, "num_cpus": 0.25})
    return spec_from_dict(raw)


def _request(kind: str, rows: pd.DataFrame, features: list[str]) -> list[Any] | dict[str, Any]:
    if kind == "images":
        from PIL import Image

        return {"image": [np.asarray(Image.open(p).convert("L")).tolist() for p in rows["path"]]}
    records = rows[features].to_dict(orient="records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]


@pytest.fixture
def serve_cleanup(ray_session: Any) -> Iterator[None]:
    yield
    from ray import serve

    serve.shutdown()  # release the replicas' CPUs for the next family's service


@pytest.mark.parametrize("family", names())
def test_family_through_every_stage(family: str, tmp_path: Path, serve_cleanup: None) -> None:
    spec = _spec(family, tmp_path)
    kind = get_kind(get_family(family).data_kind)

    trained = rayline.train(spec)
    assert trained.path == "local" and trained.metrics, trained

    predicted = rayline.predict(spec, model=trained.run_id)
    assert predicted.engine == "local" and predicted.rows > 0
    batch = pd.read_parquet(predicted.output).head(4)
    assert {"predicted_label", "probability"} <= set(batch.columns)
    assert not set(kind.output_drop) & set(batch.columns)

    service = rayline.serve(spec, model=trained.run_id, port=free_port())
    features = [
        c for c in batch.columns if c not in ("predicted_label", "probability", "probabilities", spec.data.label)
    ]
    body = json.dumps(_request(kind.name, batch, features)).encode()
    request = urllib.request.Request(f"{service.url}/predict", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=120) as resp:
        answer = json.loads(resp.read())
    assert answer["model"] == trained.run_id
    served = answer["predictions"]
    assert len(served) == len(batch)  # one output per input
    assert [str(p["label"]) for p in served] == batch["predicted_label"].astype(str).tolist()
    assert np.allclose([p["probability"] for p in served], batch["probability"], atol=1e-5)
