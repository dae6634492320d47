"""The seeded split: the seed moves rows for every column type, and the fraction holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rayline.data.split import SplitFilter, key_mask, valid_mask


def numeric(rows: int = 569) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=rows), "b": rng.integers(0, 50, rows), "label": rng.integers(0, 2, rows)})


def test_every_seed_gives_another_split_of_an_all_numeric_table() -> None:
    frame = numeric()
    splits = {tuple(np.flatnonzero(valid_mask(frame, 0.2, seed))) for seed in range(8)}
    assert len(splits) == 8


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_the_fraction_holds_within_binomial_tolerance(fraction: float) -> None:
    frame = numeric()
    n = len(frame)
    spread = 3 * np.sqrt(n * fraction * (1 - fraction))
    for seed in range(8):
        assert abs(valid_mask(frame, fraction, seed).sum() - n * fraction) <= spread


def test_a_row_lands_on_its_side_wherever_it_is() -> None:
    frame = numeric()
    mask = valid_mask(frame, 0.2, 3)
    shuffled = frame.sample(frac=1.0, random_state=1)
    again = pd.Series(valid_mask(shuffled, 0.2, 3), index=shuffled.index).sort_index().to_numpy()
    assert (again == mask).all()
    parts = np.concatenate([valid_mask(frame.iloc[:100], 0.2, 3), valid_mask(frame.iloc[100:], 0.2, 3)])
    assert (parts == mask).all()  # cut into blocks, as Ray Data reads it


def test_split_filter_keeps_one_side() -> None:
    frame = numeric()
    valid = SplitFilter(["a", "b", "label"], 0.2, 5, valid=True)(frame)
    train = SplitFilter(["a", "b", "label"], 0.2, 5, valid=False)(frame)
    assert len(valid) + len(train) == len(frame) and not set(valid.index) & set(train.index)


def test_image_keys_split_by_seed_too() -> None:
    keys = [f"{c}/{i:04d}.png" for c in range(10) for i in range(100)]
    assert (key_mask(keys, 0.2, 1) != key_mask(keys, 0.2, 2)).any()
    assert abs(key_mask(keys, 0.2, 1).mean() - 0.2) < 0.04
