"""Discrete codes for the partial information decomposition of continuous features.

:mod:`mmexp.analysis.pid` needs finite alphabets. As Liang et al., "Quantifying & Modeling
Multimodal Interactions: An Information Decomposition Framework", NeurIPS 2023, do for
real data, each modality's pooled encoder features are clustered with k-means
(:data:`DEFAULT_N_CLUSTERS` clusters, as in their code) and the cluster index is the
modality's code; labels and predictions are used as they are, through
:func:`encode_labels`. Their real-data runs first L2-normalise the features and project
them on 5 principal components: ``pca_components=5`` does the same.

k-means is fitted on at most ``max_samples`` rows drawn without replacement with ``seed``,
then every row is assigned to its nearest centre in chunks, so memory beyond the input
grows with ``max_samples`` and the chunk, not with ``N``. :class:`Discretization` records
what was fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.preprocessing import normalize

#: Clusters per modality in the reference code.
DEFAULT_N_CLUSTERS = 20
#: k-means restarts; fixed rather than sklearn's ``"auto"`` so results do not move with it.
DEFAULT_N_INIT = 10
DEFAULT_MAX_SAMPLES = 50_000
_CHUNK = 65_536


@dataclass(frozen=True)
class Discretization:
    """Cluster codes of every row and how they were obtained.

    Attributes:
        labels: Cluster index of each row, ``[N]``, in ``[0, n_clusters)``.
        n_clusters: Number of clusters.
        seed: Seed of the subsample, the PCA and k-means.
        n_init: k-means restarts.
        max_samples: Cap on the rows k-means was fitted on (``None``: no cap).
        n_fit_samples: Rows k-means was actually fitted on.
        n_samples: Rows that were assigned, ``N``.
        pca_components: Principal components after L2 normalisation, or ``None``.
        inertia: k-means inertia on the fitted rows.
    """

    labels: np.ndarray = field(repr=False)
    n_clusters: int
    seed: int
    n_init: int
    max_samples: int | None
    n_fit_samples: int
    n_samples: int
    pca_components: int | None
    inertia: float

    def record(self) -> dict[str, Any]:
        """JSON-ready settings and sizes, without the labels."""
        return {
            "n_clusters": self.n_clusters,
            "seed": self.seed,
            "n_init": self.n_init,
            "max_samples": self.max_samples,
            "n_fit_samples": self.n_fit_samples,
            "n_samples": self.n_samples,
            "pca_components": self.pca_components,
            "inertia": self.inertia,
        }


def _as_matrix(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim < 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    # Token or patch axes are flattened as the reference code does; pool them first to
    # cluster one vector per sample.
    x = x.reshape(x.shape[0], -1)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        # The reference code zeroes NaNs; here they point at a broken encoder instead.
        raise ValueError("features contain NaN or infinite values")
    return x


def discretize_with_info(
    features: np.ndarray,
    n_clusters: int = DEFAULT_N_CLUSTERS,
    seed: int = 0,
    *,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    n_init: int = DEFAULT_N_INIT,
    pca_components: int | None = None,
) -> Discretization:
    """Cluster continuous features with k-means and record how.

    Args:
        features: One modality's features, ``[N, D]`` (trailing axes are flattened).
        n_clusters: Clusters, the size of the modality's alphabet.
        seed: Seed of the subsample, the PCA and k-means.
        max_samples: Fit on at most this many rows, drawn with ``seed``; ``None`` fits on
            all of them.
        n_init: k-means restarts.
        pca_components: L2-normalise rows and keep this many principal components before
            clustering, as the reference code does for real data; ``None`` clusters the
            raw features.

    Returns:
        The codes of all ``N`` rows with the settings used.

    Raises:
        ValueError: If the features are not finite ``[N, D]``, or there are fewer fitted
            rows than clusters.
    """
    x = _as_matrix(features)
    n = x.shape[0]
    if n_clusters < 1 or n_init < 1:
        raise ValueError(f"n_clusters and n_init must be >= 1, got {n_clusters}, {n_init}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    rng = np.random.default_rng(seed)
    if max_samples is not None and n > max_samples:
        fit_rows = x[np.sort(rng.choice(n, size=max_samples, replace=False))]
    else:
        fit_rows = x
    if fit_rows.shape[0] < n_clusters:
        raise ValueError(f"{fit_rows.shape[0]} rows cannot make {n_clusters} clusters")
    pca = None
    if pca_components is not None:
        pca = PCA(n_components=pca_components, random_state=seed)
        fit_rows = pca.fit_transform(normalize(fit_rows))
    kmeans = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    kmeans.fit(fit_rows)
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        chunk = x[start : start + _CHUNK]
        if pca is not None:
            chunk = pca.transform(normalize(chunk))
        labels[start : start + _CHUNK] = kmeans.predict(chunk.astype(fit_rows.dtype, copy=False))
    return Discretization(
        labels=labels,
        n_clusters=n_clusters,
        seed=seed,
        n_init=n_init,
        max_samples=max_samples,
        n_fit_samples=int(fit_rows.shape[0]),
        n_samples=n,
        pca_components=pca_components,
        inertia=float(kmeans.inertia_),
    )


def discretize(
    features: np.ndarray,
    n_clusters: int = DEFAULT_N_CLUSTERS,
    seed: int = 0,
    **kwargs: Any,
) -> np.ndarray:
    """Cluster codes of continuous features, ``[N]`` ints in ``[0, n_clusters)``.

    Keyword arguments are those of :func:`discretize_with_info`, which also records the
    settings and the number of rows fitted.
    """
    return discretize_with_info(features, n_clusters, seed, **kwargs).labels


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``0..K-1`` for discrete labels or predictions, used as they are.

    Args:
        values: ``[N]`` class labels, predicted classes, or any hashable discrete values.

    Returns:
        ``(codes, classes)``: ``codes[i]`` indexes ``classes``, the sorted distinct values.

    Raises:
        ValueError: If ``values`` is not 1-D or holds non-finite floats.
    """
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {v.shape}; take argmax first")
    if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
        raise ValueError("labels contain NaN or infinite values")
    classes, codes = np.unique(v, return_inverse=True)
    return codes.astype(np.int64), classes
