"""One seeded split, the same on both engines: a row's side depends on its content and the seed.

Rows are hashed by pandas (``hash_pandas_object``, which hashes every column type), and the hash
is mixed with the seed by splitmix64's finalizer: pandas' own ``hash_key`` reaches object
columns only, so a table of numbers would get one split whatever the seed. The result does not
depend on row order or on how the table is cut into files or blocks, and identical rows always
land on the same side (no leakage between train and validation).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

_SCALE = float(2**64)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _seed_word(seed: int) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:8], "little"))


def valid_mask(frame: pd.DataFrame, valid_fraction: float, seed: int) -> np.ndarray:
    """True for the rows that go to validation (each with probability ``valid_fraction``)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    with np.errstate(over="ignore"):
        mixed = _mix(hashed ^ _seed_word(seed))
    mask: np.ndarray = mixed.astype(np.float64) / _SCALE < valid_fraction
    return mask


def key_mask(keys: list[str], valid_fraction: float, seed: int) -> np.ndarray:
    """``valid_mask`` over one key per row (image files: ``<class>/<file name>``)."""
    return valid_mask(pd.DataFrame({"key": keys}), valid_fraction, seed)


class SplitFilter:
    """Keeps one side of the split (a Ray Data batch function; the in-process path calls it too).

    Rows are hashed on ``columns`` (a table's features then label; an image's key); the output
    keeps only those columns unless ``keep_all`` (batch inference keeps every input column).
    """

    def __init__(self, columns: list[str], fraction: float, seed: int, valid: bool, *, keep_all: bool = False) -> None:
        self.columns, self.fraction, self.seed, self.valid = columns, fraction, seed, valid
        self.keep_all = keep_all

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        mask = valid_mask(batch[self.columns], self.fraction, self.seed)
        return (batch if self.keep_all else batch[self.columns])[mask if self.valid else ~mask]
