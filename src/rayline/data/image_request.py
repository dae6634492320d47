"""The body of ``POST /predict`` for an image model, shaped by the model's layout.

``{"image": [...]}`` (or a bare list): each image is a base64 PNG/JPEG string (a
``data:image/...;base64,`` URL too), or an array of 0-255 numbers of exactly the model's size:
``HxW`` (grayscale), or channel-first ``CxHxW``. pydantic checks the types, the shape and the
range in one pass, and the OpenAPI document states them, so a client generated from it sends
only what the service takes. Booleans are not pixel values.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag, create_model, model_validator

from rayline.data.image_codec import ImageLayout

MAX_IMAGES = 256  # per request; bigger jobs belong to `rayline predict`
# A base64 string's length bound (~9 MB of PNG/JPEG); the service's body limit is usually lower.
MAX_BASE64_CHARS = 12 * 1024 * 1024

Pixel = Annotated[float, Strict(), Field(ge=0, le=255)]


def _form(value: Any) -> str:
    """Which of the three forms an image is in: errors then name only that form's problem."""
    if isinstance(value, str):
        return "base64"
    if isinstance(value, list) and value and isinstance(value[0], list) and value[0] and isinstance(value[0][0], list):
        return "channels"
    return "pixels"


def _exactly(item: Any, n: int) -> Any:
    return Annotated[list[item], Field(min_length=n, max_length=n)]  # type: ignore[valid-type]


def image_type(layout: ImageLayout) -> Any:
    """One image of ``layout``: a base64 string, or an exactly-sized array of 0-255 numbers."""
    h, w = layout.size
    plane = _exactly(_exactly(Pixel, w), h)
    text = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_BASE64_CHARS)]
    forms: list[Any] = [Annotated[text, Tag("base64")], Annotated[_exactly(plane, layout.channels), Tag("channels")]]
    if layout.channels == 1:
        forms.append(Annotated[plane, Tag("pixels")])
    union: Any = forms[0]
    for form in forms[1:]:
        union = union | form
    return Annotated[union, Discriminator(_form)]


def _bare_list(cls: Any, value: Any) -> Any:
    """A bare list of images is the same as ``{"image": [...]}`` (Python handle callers send one)."""
    return {"image": value} if isinstance(value, list) else value


def request_model(layout: ImageLayout) -> type[BaseModel]:
    h, w = layout.size
    shape = f"{h}x{w} or 1x{h}x{w}" if layout.channels == 1 else f"3x{h}x{w}"
    images: Any = Annotated[list[image_type(layout)], Field(min_length=1, max_length=MAX_IMAGES)]  # type: ignore[misc]
    bare: Any = model_validator(mode="before")(_bare_list)
    model: type[BaseModel] = create_model(
        "ImageRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Images to classify: base64 PNG/JPEG strings, or {shape} arrays of 0-255 numbers.",
        __validators__={"_bare": bare},
        image=(
            images,
            Field(description=f"base64 PNG/JPEG strings, or {shape} arrays of 0-255 numbers"),
        ),
        model=(
            str | None,
            Field(
                default=None,
                pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{5,63}$",
                description="a registered run id (or a unique prefix of 6+ characters) to predict with; "
                "default: the served one",
            ),
        ),
    )
    return model


def output_model(layout: ImageLayout) -> type[BaseModel]:
    return create_model(
        "Prediction",
        label=(str, Field(description="the predicted class")),
        probability=(float, Field(ge=0, le=1, description="the predicted class's probability")),
        probabilities=(dict[str, float], Field(description="every class's probability")),
    )
