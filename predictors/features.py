"""Predictor features for elastic supernet spaces (genome -> fixed-length vector).

``SearchSpace.features`` encodes every gene, including the kernel and expand genes of
block slots that a stage's depth switches off; those genes do not change the network, so
they add noise a predictor has to learn to ignore. :func:`elastic_mbv3_features` encodes
what runs: per-slot kernel/expand one-hots masked by the active depth, depth and
resolution one-hots, per-stage counts and a width x resolution^2 compute proxy.
"""

from __future__ import annotations

import re

import numpy as np

from hwnas.errors import HwnasError
from hwnas.space import SearchSpace


def _layout(space: SearchSpace):
    names = [v.name for v in space.variables]
    ks = [i for i, n in enumerate(names) if re.fullmatch(r"ks\d+", n)]
    es = [i for i, n in enumerate(names) if re.fullmatch(r"e\d+", n)]
    ds = [i for i, n in enumerate(names) if re.fullmatch(r"d\d+", n)]
    r = [i for i, n in enumerate(names) if n == "r"]
    if not ks or len(ks) != len(es) or not ds or len(ks) % len(ds) or len(r) != 1:
        raise HwnasError(f"space {space.name!r} is not an elastic MobileNetV3 space (ks<i>, e<i>, d<i>, r)")
    return ks, es, ds, r[0]


def elastic_mbv3_features(space: SearchSpace, genomes) -> np.ndarray:
    """Features of genomes of an elastic MobileNetV3 space (``ks<b>``, ``e<b>``, ``d<i>``, ``r``).

    Vectorised (no per-row Python); float32, written in place (one-hots by scatter).
    Genomes that differ only in switched-off slots get identical features.
    """
    ks, es, ds, ri = _layout(space)
    G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
    if G.ndim != 2 or G.shape[1] != space.n_var:
        raise HwnasError(f"genomes must have shape (n, {space.n_var}), got {np.shape(genomes)}")
    var = space.variables
    if ((G < 0) | (G >= np.array([len(v.options) for v in var]))).any():
        raise HwnasError(f"genes out of range for space {space.name!r}")
    n, n_blocks, n_stages = len(G), len(ks), len(ds)
    max_depth = n_blocks // n_stages
    k_opts, e_opts = np.asarray(var[ks[0]].options, float), np.asarray(var[es[0]].options, float)
    d_opts, r_opts = np.asarray(var[ds[0]].options, float), np.asarray(var[ri].options, float)
    nk, ne, nd, nr = len(k_opts), len(e_opts), len(d_opts), len(r_opts)
    gk, ge, gd, gr = G[:, ks], G[:, es], G[:, ds], G[:, ri]
    active = (np.arange(max_depth) < d_opts[gd][:, :, None]).reshape(n, n_blocks)
    # Columns: k one-hots per slot (zero when off), e one-hots per slot, d one-hots per stage, r one-hot,
    # per-stage k counts, per-stage e counts, active fraction, scaled resolution, log compute proxy.
    sizes = [n_blocks * nk, n_blocks * ne, n_stages * nd, nr, n_stages * nk, n_stages * ne, 1, 1, 1]
    start = np.concatenate([[0], np.cumsum(sizes)])
    out = np.zeros((n, int(start[-1])), np.float32)
    flat, row = out.reshape(-1), (np.arange(n) * out.shape[1])[:, None]
    flat[row + start[0] + np.arange(n_blocks) * nk + gk] = active
    flat[row + start[1] + np.arange(n_blocks) * ne + ge] = active
    flat[row + start[2] + np.arange(n_stages) * nd + gd] = 1
    flat[row[:, 0] + start[3] + gr] = 1
    # Per stage: how many active blocks use each kernel / expand option.
    for b, size, g in ((0, nk, gk), (1, ne, ge)):
        counts = np.stack([((g == o) & active).reshape(n, n_stages, max_depth).sum(2) for o in range(size)], -1)
        out[:, start[4 + b]:start[5 + b]] = counts.reshape(n, -1) / max_depth
    r = r_opts[gr]
    out[:, start[6]] = active.sum(1) / n_blocks
    out[:, start[7]] = (r - r_opts.min()) / max(np.ptp(r_opts), 1.0)
    # Compute proxy: active depthwise work ~ sum(e * k^2) at the input resolution squared.
    work = (e_opts[ge] * k_opts[gk] ** 2 * active).sum(1) * (r / r_opts.max()) ** 2
    work_max = n_blocks * e_opts.max() * k_opts.max() ** 2
    out[:, start[8]] = np.log(np.maximum(work, 1e-9) / work_max) / 4.0
    return out


def predictor_features(space: SearchSpace):
    """The feature function predictors of ``space`` use: what runs for elastic MobileNetV3 spaces,
    every gene (``space.features``) otherwise. A joint space (:class:`hwnas.dimensions.JointSpace`)
    brings its own: these for its architecture genes, each dimension's for its genes."""
    custom = getattr(space, "predictor_features", None)
    if custom is not None:
        return custom
    try:
        _layout(space)
    except HwnasError:
        return space.features
    return lambda genomes: elastic_mbv3_features(space, genomes)
