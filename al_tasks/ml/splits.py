"""Splits of labelled data that keep every class where it can be learned."""

from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with ``fraction`` of each class in validation.

    A class with a single example goes to training (a model cannot learn a class it
    never saw; validation can live without it). Every class with two or more examples
    keeps at least one in each part.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=object)
    train, validation = [], []
    for cls in sorted(set(y)):
        members = rng.permutation(np.flatnonzero(y == cls))
        n_val = int(round(fraction * len(members)))
        n_val = min(max(n_val, 1 if len(members) >= 2 else 0), len(members) - 1)
        validation.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(validation, dtype=np.int64))
