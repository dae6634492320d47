"""How /predict/stream cuts a body into numbered lines and chunks, without a service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rayline.serving._stream import LineError, _chunks, _lines


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def chunked(data: bytes, *, piece: int = 3, chunk: int = 2, max_line: int = 100) -> list[tuple[list[int], list[Any]]]:
    async def collect() -> list[tuple[list[int], list[Any]]]:
        return [c async for c in _chunks(_lines(_pieces(data, piece), max_line), chunk)]

    return asyncio.run(collect())


def test_lines_keep_their_numbers_across_pieces_and_blank_lines() -> None:
    data = b'{"a": 1}\n\n{"a": 2}\n   \n{"a": 3}\n{"a": 4}'  # no newline at the end
    assert chunked(data) == [([1, 3], [{"a": 1}, {"a": 2}]), ([5, 6], [{"a": 3}, {"a": 4}])]


def test_a_bad_line_is_named_by_its_number() -> None:
    with pytest.raises(LineError, match="line 3: not valid JSON") as caught:
        chunked(b'{"a": 1}\n\n{"a": \n{"a": 2}\n')
    assert caught.value.status == 400


def test_a_line_over_the_limit_is_refused_before_it_ends() -> None:
    with pytest.raises(LineError, match="line 2 is over the 20-byte limit") as caught:
        chunked(b'{"a": 1}\n{"a": "' + b"x" * 50 + b'"}\n', max_line=20)
    assert caught.value.status == 413
