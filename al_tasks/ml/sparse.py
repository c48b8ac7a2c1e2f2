"""Spark ML vectors, as Arrow arrays, to ``scipy.sparse`` CSR matrices (no densifying)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp


def lists_to_csr(
    indices: pa.Array | pa.ChunkedArray, values: pa.Array | pa.ChunkedArray, num_features: int
) -> sp.csr_matrix:
    """Arrow ``list<int>`` indices and ``list<double>`` values -> CSR float32.

    Parameters
    ----------
    indices, values : one list per row, of equal lengths row by row
    num_features : width of the matrix

    Returns
    -------
    csr_matrix, shape (n_rows, num_features), float32
    """
    if isinstance(indices, pa.ChunkedArray):
        indices = indices.combine_chunks()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    offsets = indices.offsets.to_numpy()
    start, end = offsets[0], offsets[-1]
    data = values.values.slice(start, end - start).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    cols = indices.values.slice(start, end - start).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return sp.csr_matrix((data, cols, offsets - start), shape=(len(indices), num_features))


def vectors_to_csr(features: pa.Array | pa.ChunkedArray, num_features: int) -> sp.csr_matrix:
    """Spark ML vectors (Arrow ``struct<type, size, indices, values>``) -> CSR float32.

    Sparse vectors (type 0) keep their indices; dense ones (type 1, only where Spark
    chose to densify) are stored without their zeros.
    """
    if isinstance(features, pa.ChunkedArray):
        features = features.combine_chunks() if features.num_chunks else pa.array([], features.type)
    kinds = features.field("type").to_numpy(zero_copy_only=False)
    if not len(features) or not (kinds == 1).any():
        return lists_to_csr(features.field("indices"), features.field("values"), num_features)
    rows = []
    for kind, idx, val in zip(kinds, features.field("indices").to_pylist(), features.field("values").to_pylist()):
        val = np.asarray(val, dtype=np.float32)
        idx = np.arange(len(val)) if kind == 1 else np.asarray(idx)
        nz = val != 0
        rows.append(sp.csr_matrix((val[nz], idx[nz], [0, int(nz.sum())]), shape=(1, num_features)))
    return sp.vstack(rows, format="csr")
