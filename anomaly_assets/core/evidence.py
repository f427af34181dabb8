"""Per-point evidence of an entity from its metrics' standardized residuals ``z`` (E, T, m).

The default evidence (``detector="robust"``) is three statistics of the residual vector, each
sensitive to a different kind of fault:

- ``max``: ``max_j |z_j|``, one metric far off (a stuck valve, a spike);
- ``rms``: ``sqrt(mean_j z_j^2)``, many metrics a little off together (a load shift);
- ``pca``: the squared prediction error of principal component analysis (Jackson & Mudholkar,
  *Technometrics* 21, 1979; the SPE/Q statistic of process monitoring) fitted on the entity's
  reference residuals: metrics that usually move together and now do not (a broken
  correlation). Components are kept up to ``pca_variance`` of the variance.

Other backends replace these three with one score each, fitted on the same reference residuals:
``iforest`` (Liu, Ting & Zhou, ICDM 2008; scikit-learn), ``ecod`` (Li et al., "ECOD:
Unsupervised Outlier Detection Using Empirical Cumulative Distribution Functions", IEEE TKDE
2022) and ``hbos`` (Goldstein & Dengel, "Histogram-based Outlier Score", KI 2012). ECOD and HBOS
are a few lines of numpy each, written here from the papers. Every backend's score goes through
the same calibration (``core/calibration.py``), severities and explanations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKENDS: tuple[str, ...] = ("robust", "iforest", "ecod", "hbos")
_PCA_PRESENCE = 0.5  # least share of an entity's reference points a metric needs to enter its PCA


@dataclass
class EvidenceModel:
    """Fitted evidence of a batch of E entities: which statistics and their fitted parts."""

    backend: str
    names: tuple[str, ...]
    pca_mean: np.ndarray | None = None  # (E, m)
    pca_residual: np.ndarray | None = None  # (E, m, m): projector onto the discarded components
    fitted: list | None = None  # per entity, for iforest / ecod / hbos

    def score(self, z: np.ndarray) -> np.ndarray:
        """Evidence of each point, shape (n_statistics, E, T); larger is more unusual."""
        z = np.nan_to_num(np.asarray(z, float))
        if self.backend == "robust":
            out = []
            if "max" in self.names:
                out.append(np.abs(z).max(axis=2))
            if "rms" in self.names:
                out.append(np.sqrt(np.mean(np.square(z), axis=2)))
            if "pca" in self.names:
                c = z - self.pca_mean[:, None, :]
                r = np.einsum("etm,emk->etk", c, self.pca_residual, optimize=True)
                out.append(np.sqrt(np.mean(np.square(r), axis=2)))
            return np.stack(out)
        return np.stack([np.stack([_score_one(self.backend, f, z[e]) for e, f in enumerate(self.fitted)])])


def fit(z_ref: np.ndarray, backend: str = "robust", pca_variance: float = 0.95,
        random_state: int = 0, statistics: tuple[str, ...] = ("max", "rms", "pca")) -> EvidenceModel:
    """Fit the evidence statistics of a batch on its reference residuals.

    Parameters
    ----------
    z_ref : ndarray of shape (E, n, m)
        Standardized out-of-sample residuals of the reference points, NaN where missing or left
        out (a NaN metric reads as no deviation; a point with every metric NaN is not used).
    backend : {"robust", "iforest", "ecod", "hbos"}
    pca_variance : float
        Share of the reference variance the principal components keep.

    Returns
    -------
    EvidenceModel
    """
    if backend not in BACKENDS:
        raise ValueError(f"detector must be one of {BACKENDS}, got {backend!r}")
    z_ref = np.asarray(z_ref, float)
    E, n, m = z_ref.shape
    used = ~np.isnan(z_ref).all(axis=2)  # (E, n)
    z0 = np.nan_to_num(z_ref)
    if backend != "robust":
        return EvidenceModel(backend, (backend,), fitted=[
            _fit_one(backend, z0[e][used[e]] if used[e].sum() >= 8 else np.zeros((8, m)), random_state)
            for e in range(E)])
    if m < 2 or n < 2 * m or "pca" not in statistics:
        return EvidenceModel(backend, tuple(x for x in ("max", "rms") if x in statistics) or ("max",))
    # a metric missing from most of the reference (one that started lately) reads as "no
    # deviation" there: its correlations would be fitted to zeros, and its first normal days
    # would break them. It stays out of the PCA until it is there most of the time
    inside = (~np.isnan(z_ref)).sum(axis=1) >= _PCA_PRESENCE * used.sum(axis=1)[:, None]  # (E, m)
    w = used.astype(float)[:, :, None]
    cnt = np.maximum(w.sum(axis=1), 1.0)  # (E, 1)
    mean = (z0 * w).sum(axis=1) / cnt * inside
    c = (z0 - mean[:, None, :]) * w * inside[:, None, :]
    cov = np.einsum("etm,etk->emk", c, c, optimize=True) / cnt[:, :, None]
    vals, vecs = np.linalg.eigh(cov)  # ascending
    vals = np.maximum(vals[:, ::-1], 0.0)
    vecs = vecs[:, :, ::-1]
    share = np.cumsum(vals, axis=1) / np.maximum(vals.sum(axis=1, keepdims=True), 1e-300)
    m_in = inside.sum(axis=1)
    k = np.minimum((share < pca_variance).sum(axis=1) + 1, np.maximum(m_in - 1, 0))  # (E,)
    keep = np.arange(m)[None, :] < k[:, None]  # (E, m) components kept
    principal = vecs * keep[:, None, :]
    projector = np.eye(m)[None] - np.einsum("emk,ejk->emj", principal, principal, optimize=True)
    projector = projector * (inside[:, :, None] & inside[:, None, :]) * (m_in >= 2)[:, None, None]
    return EvidenceModel(backend, tuple(x for x in ("max", "rms", "pca") if x in statistics), mean, projector)


# -- other backends, one entity at a time ------------------------------------------------------
def _fit_one(backend: str, z: np.ndarray, random_state: int):
    if backend == "iforest":
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=100, max_samples=min(256, len(z)), random_state=random_state).fit(z)
    if backend == "ecod":
        return np.sort(z, axis=0)
    # hbos: equal-width histograms per metric (Goldstein & Dengel), sqrt(n) bins
    n_bins = max(5, int(np.sqrt(len(z))))
    hists = []
    for j in range(z.shape[1]):
        lo, hi = float(z[:, j].min()), float(z[:, j].max())
        if hi <= lo:
            hi = lo + 1e-9
        counts, edges = np.histogram(z[:, j], bins=n_bins, range=(lo, hi))
        dens = (counts + 1.0) / (len(z) + n_bins)  # Laplace smoothing: an empty bin is rare, not impossible
        hists.append((edges, dens / dens.max()))
    return hists


def _score_one(backend: str, fitted, z: np.ndarray) -> np.ndarray:
    if backend == "iforest":
        return -fitted.score_samples(z)
    if backend == "ecod":
        ref = fitted  # (n, m) sorted
        n = len(ref)
        left = np.stack([np.searchsorted(ref[:, j], z[:, j], side="right") for j in range(ref.shape[1])], axis=1)
        right = n - np.stack([np.searchsorted(ref[:, j], z[:, j], side="left") for j in range(ref.shape[1])], axis=1)
        f_left = (left + 1.0) / (n + 2.0)
        f_right = (right + 1.0) / (n + 2.0)
        # skewness picks the tail that matters per metric (ECOD's automatic choice)
        mu = ref.mean(axis=0)
        sd = ref.std(axis=0) + 1e-12
        skew = np.mean(((ref - mu) / sd) ** 3, axis=0)
        o_auto = np.where(skew < 0, -np.log(f_left), -np.log(f_right))
        o_both = np.maximum(-np.log(f_left), -np.log(f_right))
        return np.maximum(o_auto.sum(axis=1), o_both.sum(axis=1))
    out = np.zeros(len(z))
    for j, (edges, dens) in enumerate(fitted):
        k = np.clip(np.searchsorted(edges, z[:, j], side="right") - 1, 0, len(dens) - 1)
        inside = (z[:, j] >= edges[0]) & (z[:, j] <= edges[-1])
        d = np.where(inside, dens[k], dens.min() * 0.1)  # outside the reference: rarer than any bin
        out += -np.log(d)
    return out
