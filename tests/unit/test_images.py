"""Image decoding and request checking (no Ray): shapes, ranges, base64, resizing, split keys."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rayline.data.image_codec import ImageLayout, decode, decode_request, from_array, normalize
from rayline.data.image_read import FileDecoder, key_of
from rayline.data.split import key_mask as valid_mask
from rayline.errors import DataError

GRAY = ImageLayout(classes=["0", "1"], mode="L", size=(4, 6))
RGB = ImageLayout(classes=["a", "b"], mode="RGB", size=(4, 6))


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_is_channel_first_and_resizes() -> None:
    rgb = np.zeros((8, 12, 3), dtype=np.uint8)
    rgb[..., 2] = 200
    out = decode(png(rgb), "RGB", (4, 6))
    assert out.shape == (3, 4, 6) and out.dtype == np.uint8
    assert (out[2] == 200).all() and (out[0] == 0).all()
    gray = decode(png(rgb), "L", None)
    assert gray.shape == (1, 8, 12)


def test_undecodable_bytes() -> None:
    with pytest.raises(ValueError, match="not a decodable image"):
        decode(b"\x89PNG but not really", "L", None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not a png", "cannot identify an image format, such as PNG or JPEG, in its 9 bytes"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "cannot identify an image format, such as PNG or JPEG, in its 16 bytes"),
        (b"", "it is empty"),
    ],
)
def test_an_unidentified_image_is_named_without_a_python_repr(raw: bytes, reason: str) -> None:
    """PIL says "cannot identify image file <_io.BytesIO object at 0x7f...>": the caller is told what it sent."""
    with pytest.raises(ValueError) as info:
        decode(raw, "L", None)
    assert str(info.value) == f"not a decodable image ({reason})"
    with pytest.raises(DataError) as request:
        decode_request([np.zeros((4, 6)).tolist(), base64.b64encode(raw).decode()], GRAY)
    assert request.value.message == f"image.1: not a decodable image ({reason})"
    assert "object at 0x" not in str(request.value)


def test_other_decoder_messages_lose_a_python_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    def broken(fp: Any) -> Any:
        raise OSError(f"broken data stream when reading image file {fp!r}")

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ValueError) as info:
        decode(b"\x89PNG...", "L", None)
    assert str(info.value) == "not a decodable image (broken data stream when reading image file)"


def test_an_undecodable_file_is_named_without_a_python_repr(tmp_path: Path) -> None:
    """The message the CLI prints for a bad file in a folder (on_bad_file: fail)."""
    good, bad = tmp_path / "good.png", tmp_path / "broken.png"
    good.write_bytes(png(np.zeros((4, 6), dtype=np.uint8)))
    bad.write_bytes(b"not a png at all")
    load = FileDecoder([str(good), str(bad)], [None, None], "L", None, skip=False)
    assert load(0) is not None
    with pytest.raises(DataError) as info:
        load(1)
    assert info.value.message.startswith(f"{bad}: not a decodable image (cannot identify an image format")
    assert "object at 0x" not in str(info.value) and "BytesIO" not in str(info.value)


def test_a_predict_body_with_an_undecodable_image_is_a_422_without_a_python_repr() -> None:
    from fastapi.testclient import TestClient

    from rayline.data import get_kind
    from rayline.serving._http import build_api

    kind = get_kind("images")
    meta = {"family": "resnet", "data_kind": "images", "layout": GRAY.to_dict()}

    async def predict(body: Any, model_id: str | None) -> tuple[str, list[dict[str, Any]]]:
        return "run1", [{"pixels": int(a.size)} for a in kind.decode_request(body, meta)]

    app = build_api(
        title="t",
        body_model=kind.request_model(meta),
        predict=predict,
        info={"model_run_id": "run1"},
        api_key=None,
        max_request_bytes=10_000,
    )
    client = TestClient(app)
    ok = client.post("/predict", json={"image": [base64.b64encode(png(np.zeros((4, 6), dtype=np.uint8))).decode()]})
    assert ok.status_code == 200 and ok.json()["predictions"] == [{"pixels": 24}]
    bad = client.post("/predict", json={"image": [np.zeros((4, 6)).tolist(), base64.b64encode(b"not a png").decode()]})
    assert bad.status_code == 422
    assert bad.json() == {
        "error": "image.1: not a decodable image (cannot identify an image format, such as PNG or JPEG, in its 9 bytes)"
    }
    assert "object at 0x" not in bad.text


def test_arrays_are_checked_against_the_layout() -> None:
    good = np.arange(24).reshape(4, 6)
    assert from_array(good.tolist(), GRAY).shape == (1, 4, 6)
    assert from_array([good.tolist()], GRAY).shape == (1, 4, 6)
    assert from_array(np.zeros((3, 4, 6)).tolist(), RGB).shape == (3, 4, 6)
    with pytest.raises(ValueError, match="expected a 4x6 array of 0-255 values, got 6x4"):
        from_array(good.T.tolist(), GRAY)
    with pytest.raises(ValueError, match="expected a 3x4x6 array"):
        from_array(good.tolist(), RGB)
    with pytest.raises(ValueError, match="from 0 to 255"):
        from_array((good * 20).tolist(), GRAY)
    with pytest.raises(ValueError, match="from 0 to 255"):
        from_array((good - 1).tolist(), GRAY)
    with pytest.raises(ValueError, match="array of numbers"):
        from_array([["x"] * 6] * 4, GRAY)
    with pytest.raises(ValueError, match="array of numbers"):
        from_array([[1, 2], [3]], GRAY)  # ragged


def test_request_mixes_arrays_and_base64_and_names_the_bad_image() -> None:
    image = (np.arange(24).reshape(4, 6) * 10).astype(np.uint8)
    encoded = base64.b64encode(png(image)).decode()
    batch = decode_request([image.tolist(), encoded, "data:image/png;base64," + encoded], GRAY)
    assert batch.shape == (3, 1, 4, 6)
    assert (batch[0] == batch[1]).all() and (batch[1] == batch[2]).all()
    with pytest.raises(DataError, match=r"image\.1: a string must be a base64"):
        decode_request([image.tolist(), "***"], GRAY)


def test_normalize_is_the_course_transform() -> None:
    images = np.array([[[[0, 255, 51]]]], dtype=np.uint8)
    np.testing.assert_allclose(normalize(images, GRAY), [[[[-1.0, 1.0, -0.6]]]], atol=1e-6)


def test_split_keys_ignore_where_the_folder_lives() -> None:
    assert key_of("/data/mnist/7/00012.png") == key_of("bucket/x/7/00012.png") == "7/00012.png"
    keys = [f"{c}/{i:05d}.png" for c in range(10) for i in range(200)]
    mask = valid_mask(keys, 0.2, 42)
    assert 0.17 < mask.mean() < 0.23
    assert (valid_mask(list(reversed(keys)), 0.2, 42) == mask[::-1]).all()
    assert (valid_mask(keys, 0.2, 7) != mask).any()


def test_layout_round_trip() -> None:
    assert ImageLayout.from_dict(RGB.to_dict()) == RGB
    assert RGB.describe() == "4x6 RGB" and GRAY.channels == 1 and RGB.channels == 3


def test_a_single_image_file_as_the_input_says_what_is_expected(tmp_path: Path) -> None:
    from rayline.data.image_read import list_images

    one = tmp_path / "digit.png"
    one.write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match=r"digit\.png: a single file; expected a folder of images"):
        list_images(str(one))
    assert list_images(str(tmp_path)) == [str(one)]


def test_a_table_given_to_an_image_model_names_the_missing_column(tmp_path: Path) -> None:
    import pandas as pd

    from rayline import spec_from_dict
    from rayline.data.image_read import parquet_images

    table = tmp_path / "trips.parquet"
    pd.DataFrame({"passenger_count": [1.0], "trip_distance": [2.5]}).to_parquet(table)
    spec = spec_from_dict({"name": "digits", "data": {"source": str(table)}, "model": {"family": "resnet18"}})
    with pytest.raises(DataError) as info:
        parquet_images(spec, str(table))
    assert str(info.value) == (
        f"{table}: no column 'image'; an image parquet has an image column ('image': encoded bytes) and a label"
        " column ('label'); columns are passenger_count, trip_distance"
    )
