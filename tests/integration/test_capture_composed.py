"""serve.capture on the composed topology with an image model: the ingress routes bodies, the
capture decodes them in its thread; the protocol's tensors (which skip the router) are captured too."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

import imagesets
import rayline
from rayline.data.capture import items_of, outputs_of, read_capture
from service import free_port


def test_composed_image_traffic_is_captured(ray_session: Any, rayline_home: Path, tmp_path: Path) -> None:
    source = imagesets.digits(tmp_path / "digits", per_class=6, classes=[1, 4])
    folder = tmp_path / "traffic"
    options = {"num_replicas": 1, "num_cpus": 0.25, "topology": "composed",
               "capture": {"path": str(folder), "fraction": 1.0}}  # fmt: skip
    spec = imagesets.spec_for(source, name="captured", serve=options)
    rayline.train(spec)
    service = rayline.serve(spec, port=free_port())
    image = imagesets.digit_array(4)
    try:
        request = urllib.request.Request(
            f"{service.url}/predict", data=json.dumps({"image": [image.tolist()] * 2}).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            sent_id = resp.headers["X-Request-Id"]
            answers = json.loads(resp.read())["predictions"]
        tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": image.tolist()}
        request = urllib.request.Request(
            f"{service.url}/v2/models/captured/infer", data=json.dumps({"inputs": [tensor]}).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
    finally:
        from ray import serve

        serve.shutdown()  # the ingress's graceful stop writes what its capture holds
    table = read_capture(str(folder))
    assert table.num_rows == 3, table.to_pylist()
    ids = table.column("request_id").to_pylist()
    assert ids[:2] == [sent_id, sent_id]
    for item in items_of(table):
        assert np.array_equal(item.reshape(28, 28), image.reshape(28, 28))
    assert outputs_of(table)[:2] == answers
    assert set(table.column("role").to_pylist()) == {"primary"}
