"""Each way of asking a model, answering for the verify rows as one frame.

Every path's answer is brought to one shape, indexed by row number: ``label`` (the class as
text) and ``probability``, plus ``p[<class>]`` for each class where the path gives every class's
probability; or ``prediction`` for regression. Batch output, ``/predict``'s JSON and the
protocol's tensors name these differently (``predicted_label``/``label``; a list, a dict keyed by
class or an ``[n, classes]`` tensor); here they become the same columns.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rayline.registry import MODEL_PATH, Registry
from rayline.serving.oip.codec import from_bytes, to_bytes
from rayline.spec import Spec
from rayline.stages.predict import ResolvedModel
from rayline.verify import grpc_client
from rayline.verify.rows import ROW, PathFailed, Rows, pyfunc_input, request_body, tensor_inputs

CHUNK = 64  # rows per request: under every service's per-request limits (256 images, 10,000 records)
HTTP_TIMEOUT_S = 120.0


def _classes(m: ResolvedModel) -> list[str]:
    return [str(c) for c in m.meta["layout"].get("classes") or []]


def _frame(
    m: ResolvedModel, labels: Sequence[Any] | None, probability: Any, each: Any, prediction: Any
) -> pd.DataFrame:
    """The common shape. ``each``: one row of class probabilities per example (class order), or None."""
    if prediction is not None:
        return pd.DataFrame({"prediction": np.asarray(prediction, dtype=np.float64)})
    assert labels is not None
    out = pd.DataFrame({"label": [str(v) for v in labels], "probability": np.asarray(probability, dtype=np.float64)})
    if each is not None:
        # A cell may be a list, an array or Ray Data's tensor element (the pool's parquet, read back).
        cells = [row.to_numpy() if hasattr(row, "to_numpy") else row for row in each]
        matrix = np.asarray([np.asarray(c, dtype=np.float64).reshape(-1) for c in cells]).reshape(len(out), -1)
        for j, name in enumerate(_classes(m)):
            out[f"p[{name}]"] = matrix[:, j]
    return out


def from_batch(m: ResolvedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Batch prediction's (and the pyfunc's) columns: predicted_label, probability, probabilities."""
    if "prediction" in frame.columns:
        return _frame(m, None, None, None, frame["prediction"])
    each = frame["probabilities"] if "probabilities" in frame.columns else None
    return _frame(m, list(frame["predicted_label"]), frame["probability"], each, None)


# ------------------------------------------------------------------------- batch prediction
def batch(spec: Spec, m: ResolvedModel, rows: Rows, engine: str, out: Path, registry: Registry) -> pd.DataFrame:
    """``rayline predict`` of the rows on ``engine`` (local: in this process; ray: the actor pool)."""
    from rayline.stages.predict import predict as predict_stage

    predict = spec.predict.model_copy(update={"engine": engine, "on_bad_row": "fail", "output": None})
    result = predict_stage(
        spec.model_copy(update={"predict": predict}),
        model=m.record.run_id,
        input=str(rows.input),
        output=str(out),
        registry=registry,
    )
    frame = pd.read_parquet(result.output)
    # The pool may answer in another order: a table's row number column, an image's file name (rows/00012.png).
    keys = frame["key"] if rows.images else frame[ROW]
    order = [int(Path(str(key)).stem) for key in keys]
    answered = from_batch(m, frame.reset_index(drop=True))
    answered.index = pd.Index(order)
    return answered.sort_index()


# -------------------------------------------------------------------------------- HTTP
def _post(url: str, body: bytes, headers: Mapping[str, str], what: str) -> bytes:
    request = urllib.request.Request(url, data=body, headers={**headers}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
            answer: bytes = resp.read()
            return answer
    except urllib.error.HTTPError as err:
        raise PathFailed(f"{what}: HTTP {err.code}: {err.read()[:300].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as err:
        raise PathFailed(f"{what}: {getattr(err, 'reason', err)}") from None


def _chunks(rows: Rows) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, len(rows))) for start in range(0, len(rows), CHUNK)]


def predict_http(url: str, m: ResolvedModel, rows: Rows) -> pd.DataFrame:
    """``POST /predict``: records (or base64 images) in, ``predictions`` out."""
    answers: list[dict[str, Any]] = []
    for start, stop in _chunks(rows):
        body = json.dumps(request_body(rows, m, start, stop), allow_nan=False).encode()
        raw = _post(f"{url}/predict", body, {"Content-Type": "application/json"}, "POST /predict")
        answers.extend(json.loads(raw)["predictions"])
    if answers and "prediction" in answers[0]:
        return _frame(m, None, None, None, [a["prediction"] for a in answers])
    each = None
    if answers and "probabilities" in answers[0]:
        each = [[a["probabilities"][c] for c in _classes(m)] for a in answers]
    return _frame(m, [a["label"] for a in answers], [a["probability"] for a in answers], each, None)


def _from_tensors(m: ResolvedModel, outputs: Mapping[str, np.ndarray]) -> pd.DataFrame:
    if "prediction" in outputs:
        return _frame(m, None, None, None, outputs["prediction"].reshape(-1))
    labels = [v.decode() if isinstance(v, bytes) else v for v in outputs["label"].reshape(-1).tolist()]
    return _frame(m, labels, outputs["probability"].reshape(-1), outputs.get("probabilities"), None)


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}


def oip_rest(url: str, name: str, m: ResolvedModel, rows: Rows) -> pd.DataFrame:
    """The Open Inference Protocol over REST: binary input tensors (the protocol's extension, which
    also carries NaN), JSON answers."""
    parts = []
    for start, stop in _chunks(rows):
        described, blobs = [], []
        for tensor, datatype, array in tensor_inputs(rows, m, start, stop):
            blob = to_bytes(array)
            described.append(
                {
                    "name": tensor,
                    "datatype": datatype,
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": len(blob)},
                }
            )
            blobs.append(blob)
        head = json.dumps({"inputs": described}).encode()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
        raw = _post(f"{url}/v2/models/{name}/infer", head + b"".join(blobs), headers, "Open Inference Protocol REST")
        answer = json.loads(raw)
        parts.append(
            {
                o["name"]: np.array(o["data"], dtype=np.object_ if o["datatype"] == "BYTES" else None).reshape(
                    o["shape"]
                )
                for o in answer["outputs"]
            }
        )
    return _from_tensors(m, _joined(parts))


def oip_grpc(address: str, name: str, m: ResolvedModel, rows: Rows) -> pd.DataFrame:
    """The Open Inference Protocol over gRPC (``ModelInfer``, raw tensor contents)."""
    parts = []
    with grpc_client.Client(address, application=name) as client:
        for start, stop in _chunks(rows):
            answer = client.infer(name, tensor_inputs(rows, m, start, stop))
            parts.append(
                {
                    o.name: from_bytes(o.name, o.datatype, tuple(o.shape), raw)
                    for o, raw in zip(answer.outputs, answer.raw_output_contents, strict=True)
                }
            )
    return _from_tensors(m, _joined(parts))


# ------------------------------------------------------------------------------- MLflow
def mlflow_pyfunc(m: ResolvedModel, rows: Rows) -> pd.DataFrame | None:
    """``mlflow.pyfunc.load_model`` on the run's ``model/`` artifact; None for a run logged before
    runs were MLflow models (a bare ``checkpoint/``)."""
    if m.record.model_path != MODEL_PATH:
        return None
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"{m.record.artifact_uri.rstrip('/')}/{MODEL_PATH}")
    return from_batch(m, model.predict(pyfunc_input(rows, m)).reset_index(drop=True))
