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

    Vectorised (no per-row Python); float32. Genomes that differ only in switched-off
    slots get identical features.
    """
    ks, es, ds, ri = _layout(space)
    G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
    if G.ndim != 2 or G.shape[1] != space.n_var:
        raise HwnasError(f"genomes must have shape (n, {space.n_var}), got {np.shape(genomes)}")
    var = space.variables
    n, n_blocks, n_stages = len(G), len(ks), len(ds)
    max_depth = n_blocks // n_stages
    k_opts, e_opts = np.asarray(var[ks[0]].options, float), np.asarray(var[es[0]].options, float)
    d_opts, r_opts = np.asarray(var[ds[0]].options, float), np.asarray(var[ri].options, float)
    depth = d_opts[G[:, ds]]  # (n, S)
    active = (np.arange(max_depth)[None, None, :] < depth[:, :, None]).reshape(n, n_blocks)
    gk, ge = G[:, ks], G[:, es]
    onehot_k = (gk[:, :, None] == np.arange(len(k_opts))) & active[:, :, None]
    onehot_e = (ge[:, :, None] == np.arange(len(e_opts))) & active[:, :, None]
    onehot_d = G[:, ds][:, :, None] == np.arange(len(d_opts))
    onehot_r = G[:, [ri]] == np.arange(len(r_opts))
    # Per stage: how many active blocks use each kernel / expand option.
    per_stage_k = onehot_k.reshape(n, n_stages, max_depth, -1).sum(2) / max_depth
    per_stage_e = onehot_e.reshape(n, n_stages, max_depth, -1).sum(2) / max_depth
    r = r_opts[G[:, ri]]
    r_scaled = (r - r_opts.min()) / max(np.ptp(r_opts), 1.0)
    # Compute proxy: active depthwise work ~ sum(e * k^2) at the input resolution squared.
    work = (e_opts[ge] * k_opts[gk] ** 2 * active).sum(1) * (r / r_opts.max()) ** 2
    work_max = n_blocks * e_opts.max() * k_opts.max() ** 2
    return np.concatenate(
        [
            onehot_k.reshape(n, -1), onehot_e.reshape(n, -1), onehot_d.reshape(n, -1), onehot_r,
            per_stage_k.reshape(n, -1), per_stage_e.reshape(n, -1),
            (active.sum(1, keepdims=True) / n_blocks), r_scaled[:, None],
            np.log(np.maximum(work, 1e-9) / work_max)[:, None] / 4.0,
        ],
        1,
    ).astype(np.float32)


def predictor_features(space: SearchSpace):
    """The feature function predictors of ``space`` use: what runs for elastic MobileNetV3 spaces,
    every gene (``space.features``) otherwise."""
    try:
        _layout(space)
    except HwnasError:
        return space.features
    return lambda genomes: elastic_mbv3_features(space, genomes)
