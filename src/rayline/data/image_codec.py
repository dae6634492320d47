"""Images as model inputs: the layout a model sees, decoding files and requests, normalization.

Every image becomes a channel-first ``uint8`` array ``[C, H, W]`` in the spec's mode (L or RGB)
and size. Normalization (mean, std) is applied by the model, so data moves through Ray as
bytes, not floats.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from rayline.errors import DataError

# Decoding allocates width x height x channels bytes before any resize: a small PNG whose header
# claims 100000x100000 pixels must be refused from its header, not decoded (a "decompression bomb").
MAX_DECODED_PIXELS = 4096 * 4096
# PIL names the stream it read in some messages ("cannot identify image file <_io.BytesIO object
# at 0x7f...>"): an address that means nothing to the caller, left out of what it is told.
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


class _TooBig(ValueError):
    pass


@dataclass(frozen=True)
class ImageLayout:
    """What the model sees: class names by index, colour mode, (height, width), normalization."""

    classes: list[str]
    mode: Literal["L", "RGB"]
    size: tuple[int, int]
    mean: float = 0.5
    std: float = 0.5
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded (on_bad_file: skip)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["size"] = list(self.size)
        out.pop("skipped")
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ImageLayout:
        return cls(
            classes=[str(c) for c in raw["classes"]],
            mode=raw["mode"],
            size=(int(raw["size"][0]), int(raw["size"][1])),
            mean=float(raw.get("mean", 0.5)),
            std=float(raw.get("std", 0.5)),
        )

    def describe(self) -> str:
        return f"{self.size[0]}x{self.size[1]} {'grayscale' if self.mode == 'L' else 'RGB'}"


# ---------------------------------------------------------------------------------- decode
def channel_first(array: np.ndarray) -> np.ndarray:
    """HxW -> 1xHxW, HxWxC -> CxHxW (the layout torch convolutions take)."""
    if array.ndim == 2:
        return array[None, :, :]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode(raw: bytes, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """Encoded image bytes -> ``uint8 [C, H, W]``; raises ValueError when undecodable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as opened:  # reads the header only
            if opened.width * opened.height > MAX_DECODED_PIXELS:
                raise _TooBig(
                    f"the image is {opened.width}x{opened.height} pixels; at most {MAX_DECODED_PIXELS:,} are decoded"
                )
            img = opened.convert(mode)
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return channel_first(np.asarray(img, dtype=np.uint8))
    except _TooBig:
        raise
    except UnidentifiedImageError:
        raise ValueError(f"not a decodable image ({_unidentified(raw)})") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        lines = _OBJECT_REPR.sub("", str(err)).strip().splitlines() or [type(err).__name__]
        raise ValueError(f"not a decodable image ({lines[0][:120]})") from None


def _unidentified(raw: bytes) -> str:
    """What PIL could not identify, said without its stream's repr."""
    if not raw:
        return "it is empty"
    return f"cannot identify an image format, such as PNG or JPEG, in its {len(raw):,} bytes"


def decode_base64(text: str, mode: str, size: tuple[int, int]) -> np.ndarray:
    """A base64 PNG/JPEG (optionally a ``data:image/...;base64,`` URL, as canvas.toDataURL gives)."""
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a string must be a base64-encoded PNG or JPEG") from None
    return decode(raw, mode, size)


def from_array(value: Any, layout: ImageLayout) -> np.ndarray:
    """A nested list of 0-255 numbers -> ``uint8 [C, H, W]`` of the layout's shape, or ValueError."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError("expected a 2-D (or channel-first 3-D) array of numbers") from None
    h, w = layout.size
    c = layout.channels
    expected = f"{h}x{w}" if c == 1 else f"{c}x{h}x{w}"
    given = "x".join(map(str, array.shape)) or "a single number"
    if array.ndim == 2 and c == 1:
        array = array[None]
    if array.ndim != 3 or array.shape != (c, h, w):
        raise ValueError(f"expected a {expected} array of 0-255 values, got {given}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise ValueError("pixel values must be numbers from 0 to 255")
    return np.rint(array).astype(np.uint8)


def decode_request(values: Sequence[Any], layout: ImageLayout) -> np.ndarray:
    """A request's images (nested arrays or base64 strings) -> uint8 [N, C, H, W]; DataError names the bad one."""
    arrays = []
    for i, value in enumerate(values):
        try:
            if isinstance(value, str):
                arrays.append(decode_base64(value, layout.mode, layout.size))
            else:
                arrays.append(from_array(value, layout))
        except ValueError as err:
            raise DataError(f"image.{i}: {err}") from None
    return np.stack(arrays)


def normalize(images: np.ndarray, layout: ImageLayout) -> np.ndarray:
    """uint8 [N, C, H, W] -> float32, scaled to [0, 1] then (x - mean) / std (the course's transform)."""
    scale = np.float32(1.0 / (255.0 * layout.std))
    shift = np.float32(layout.mean / layout.std)
    out: np.ndarray = images.astype(np.float32) * scale - shift
    return out
