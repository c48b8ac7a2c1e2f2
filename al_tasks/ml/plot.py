"""Plot: a 2-D picture of the pool, coloured by predicted class, queried points marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_pool(model, X_sample, X_queried, path: str | Path, *, title: str = "", seed: int = 0) -> Path:
    """Write a PNG of a TruncatedSVD projection.

    Parameters
    ----------
    model : fitted classifier with ``predict`` and ``classes_``
    X_sample : CSR, shape (n, n_features), a random sample of the pool
    X_queried : CSR, shape (k, n_features), the items just queried
    path : where to write the PNG
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    both = sp.vstack([X_sample, X_queried], format="csr")
    svd = TruncatedSVD(n_components=2, random_state=seed).fit(both)
    xy_sample, xy_queried = svd.transform(X_sample), svd.transform(X_queried)
    predicted = model.predict(X_sample)
    fig, ax = plt.subplots(figsize=(8, 6), dpi=110)
    cmap = plt.get_cmap("tab10")
    for i, cls in enumerate(model.classes_):
        mask = predicted == cls
        if mask.any():
            ax.scatter(*xy_sample[mask].T, s=6, alpha=0.45, color=cmap(i % 10), label=str(cls))
    ax.scatter(*xy_queried.T, s=40, facecolors="none", edgecolors="black", linewidths=1.2, label="queried")
    ax.set_xlabel("SVD 1")
    ax.set_ylabel("SVD 2")
    ax.set_title(title or "Pool (sample) by predicted class; circles = queried")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def sample_positions(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``size`` sorted random positions out of ``n`` (all when n <= size)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
