"""Faster twins of ``TabularSpace.features`` for FBNet and OFA, checked against the originals.

The few-shot predictor spends most of its prediction time building features (OFA: about
two thirds). These encoders compute the same matrices from lookup tables built once per
space (per-slot MACs by kernel, expand and resolution) and write every column block into
one preallocated float32 array, with no per-row Python.

They duplicate the feature layout of :mod:`hwnas.tabular`, so :func:`fast_features` only
uses one after checking it against ``tspace.features`` on random genomes and the extremes
(to float32 rounding); if the layout there changes, the check fails and the original is
used (``fast_features(...)`` then returns None for that space).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable, Optional

import numpy as np

from hwnas.tabular import FbnetSpace, OfaSpace, TabularSpace

Encoder = Callable[[np.ndarray], np.ndarray]
_CHECKED: "weakref.WeakKeyDictionary[TabularSpace, Optional[Encoder]]" = weakref.WeakKeyDictionary()


def _onehot_into(out: np.ndarray, offset: int, G: np.ndarray, n_opts: int, values=1.0) -> None:
    """out[:, offset + j * n_opts + G[:, j]] = values, for every gene column j of G."""
    cols = offset + np.arange(G.shape[1]) * n_opts + G
    out[np.arange(len(G))[:, None], cols] = values


def _fbnet_encoder(ts: FbnetSpace) -> Encoder:
    n_blocks, n_ops = ts.block_macs.shape
    scaled = (ts.block_macs / ts._block_scale.T).astype(np.float64)  # (22, 9)
    log_fixed = np.log(ts.fixed_macs)
    slots = np.arange(n_blocks)

    def encode(G: np.ndarray) -> np.ndarray:
        n = len(G)
        out = np.zeros((n, n_blocks * n_ops + n_blocks + n_ops + 1), dtype=np.float32)
        _onehot_into(out, 0, G, n_ops)
        off = n_blocks * n_ops
        out[:, off:off + n_blocks] = scaled[slots, G]
        off += n_blocks
        out[:, off:off + n_ops] = out[:, :n_blocks * n_ops].reshape(n, n_blocks, n_ops).sum(1) / n_blocks
        total = ts.block_macs[slots, G].sum(1) + ts.fixed_macs
        out[:, -1] = (np.log(total) - log_fixed) / 4.0
        return out

    return encode


def _ofa_encoder(ts: OfaSpace) -> Encoder:
    R = len(ts.resolutions)
    # Block MACs of a slot depend only on its kernel, expand and the input resolution:
    # probe each (k, e, r) with every slot set alike and all stages at full depth.
    probe = np.zeros((9 * R, ts.space.n_var), dtype=np.int64)
    k_idx, e_idx, r_idx = (a.reshape(-1) for a in np.meshgrid(np.arange(3), np.arange(3), np.arange(R), indexing="ij"))
    probe[:, :20], probe[:, 20:40] = k_idx[:, None], e_idx[:, None]
    probe[:, 40:45], probe[:, 45] = 2, r_idx
    blocks, fixed = ts._block_macs(probe)
    table = np.zeros((20, 3, 3, R))
    table[:, k_idx, e_idx, r_idx] = blocks.T
    fixed_by_r = np.zeros(R)
    fixed_by_r[r_idx] = fixed
    res = np.asarray(ts.resolutions, dtype=np.float64)
    res_scaled = (res - res[0]) / max(1, res[-1] - res[0])
    slots = np.arange(20)
    pixel_scale = ts._per_pixel_scale

    def encode(G: np.ndarray) -> np.ndarray:
        n = len(G)
        gk, ge, gd, gr = G[:, :20], G[:, 20:40], G[:, 40:45], G[:, 45]
        depth = gd + 2
        active = (np.arange(4)[None, None, :] < depth[:, :, None]).reshape(n, 20)
        out = np.zeros((n, 184), dtype=np.float32)  # 60 + 60 + 2 + 20 + 15 + 20 + 5 + 1 + 1
        _onehot_into(out, 0, gk, 3, active)
        _onehot_into(out, 60, ge, 3, active)
        rs = res_scaled[gr]
        out[:, 120], out[:, 121] = rs, rs ** 2
        out[:, 122:142] = active
        _onehot_into(out, 142, gd, 3)
        blocks = table[slots, gk, ge, gr[:, None]] * active
        r = res[gr]
        out[:, 157:177] = blocks / (r ** 2)[:, None] / pixel_scale
        out[:, 177:182] = (depth - 2) / 2.0
        out[:, 182] = r / 224.0
        out[:, 183] = (np.log(blocks.sum(1) + fixed_by_r[gr]) - np.log(5e7)) / 2.0
        return out

    return encode


_BUILDERS = {FbnetSpace: _fbnet_encoder, OfaSpace: _ofa_encoder}


def fast_features(ts: TabularSpace) -> Optional[Encoder]:
    """A checked fast encoder for ``ts`` (genomes already checked -> features), or None."""
    if ts not in _CHECKED:
        _CHECKED[ts] = _build_checked(ts)
    return _CHECKED[ts]


def _build_checked(ts: TabularSpace) -> Optional[Encoder]:
    builder = next((b for cls, b in _BUILDERS.items() if type(ts) is cls), None)
    if builder is None:
        return None
    try:
        encode = builder(ts)
        G = np.concatenate([ts.space.sample(np.random.default_rng(0), 512), ts.space.smallest()[None],
                            ts.space.largest()[None]])
        ref, got = ts.features(G), encode(G)
        if ref.shape == got.shape and np.allclose(got, ref, rtol=1e-5, atol=1e-5):
            return encode
        problem = f"differs (shape {got.shape} vs {ref.shape})"
    except Exception as err:  # any drift in the private layout: fall back, never fail a prediction
        problem = f"failed ({type(err).__name__}: {err})"
    warnings.warn(f"fast feature encoder for {ts.name} {problem} from TabularSpace.features; using the original",
                  RuntimeWarning, stacklevel=3)
    return None
