"""Tabular benchmark spaces: NAS-Bench-201, FBNet and OFA-MobileNetV3 tables of measured metrics.

A table is a CSV (optionally gzipped) with one row per architecture: an ``arch_idx``, the
architecture (``arch_str`` for NB201, ``arch_key`` for FBNet/OFA) and metric columns such as
``<device>_latency_ms``. :class:`TabularBenchmark` maps rows to genomes of a
:class:`hwnas.space.SearchSpace` so search strategies and predictors run on the table.

Each space also gives predictor features, an analytical MAC count (used by the FLOPs
baseline) and the work counts of the analytical energy estimate (:meth:`TabularSpace.counts`).
Those depend only on the genome, never on the table, so a predictor trained on a table can
score genomes the table does not hold.

MAC conventions (multiply-accumulates of conv / linear layers; BN, activations and additions
are ignored, pooling counts one op per window element):

* NB201: the standard macro for CIFAR (32x32 input): stem 3x3 conv to 16 channels, three
  stages of N=5 cells with C=16/32/64 at 32/16/8 px, a ResNet basic block (3x3 s2 conv,
  3x3 conv, avg-pool + 1x1 shortcut) between stages, and a 64->10 classifier. Every edge
  runs, also edges whose result does not reach the output, as in NB201's implementation.
* FBNet (HELP / HW-NAS-Bench CIFAR-100 setting): 32x32 input, 3x3 stem to 16 channels at
  stride 1, 22 blocks in stages (channels, blocks, first stride) = (16,1,1) (24,4,1) (32,4,2)
  (64,4,2) (112,4,1) (184,4,2) (352,1,1), then 1x1 conv to 1504 and a 100-way classifier.
  A block ``k<k>_e<e>[_g<g>]`` is an inverted residual: grouped 1x1 expand (x e), k x k
  depthwise (carrying the stride), grouped 1x1 project. ``skip`` is free when shapes match,
  otherwise a 1x1 projection (an approximation of the stage-entry skip).
* OFA-MobileNetV3: input r x r, 3x3 s2 stem to 16 channels, a fixed 3x3 depthwise block,
  five stages (24,40,80,112,160 channels, strides 2,2,2,1,2, squeeze-excite in stages
  2, 4, 5) of which the first ``d`` of 4 block slots run, each an inverted residual with
  kernel ``ks`` and expansion ``e``; then 1x1 to 960, pooling, 960->1280->1000.

Work counts (:meth:`TabularSpace.counts`, for :mod:`hwnas.devices.energy`) walk the same
layers, counted like :func:`hwnas.devices.energy.count_model` counts a torch model: conv and
linear layers only (no pooling), each reading its weights (bias included) and its input and
writing its output once. OFA's squeeze-excite width is rounded as in OFA and timm
(``make_divisible(hidden / 4, 8)``); the MAC count keeps ``hidden // 4``, which the shipped
predictors' features were computed with (squeeze-excite runs on 1x1 maps: < 0.1 % of MACs).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .errors import HwnasError
from .space import Choice, SearchSpace

LATENCY_SUFFIX = "_latency_ms"
TABLE_FILES = {"nb201": "nb201.csv.gz", "fbnet": "fbnet.csv.gz", "ofa_mbv3": "ofa.csv.gz"}

# HELP's fixed reference architectures (arch_idx) whose latencies form the hardware embedding.
REFERENCE_ARCHS = {
    "nb201": (11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462),
    "fbnet": (3328, 3790, 3313, 890, 3052, 2538, 1640, 2514, 457, 2100),
    "ofa_mbv3": (1316, 1587, 1621, 1636, 1980, 2329, 2487, 3355, 3740, 4948),
}


def default_data_dir() -> Path:
    """``$HWNAS_SHARED/data/hwnas-bench`` or ``<repo>/../shared/data/hwnas-bench``."""
    shared = os.environ.get("HWNAS_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[1] / ".." / "shared"
    return (root / "data" / "hwnas-bench").resolve()


def _onehot(G: np.ndarray, n: int) -> np.ndarray:
    """(rows, genes) ints in [0, n) -> (rows, genes * n) one-hot."""
    out = np.zeros((G.shape[0], G.shape[1] * n), dtype=np.float32)
    _set_onehot(out, 0, G, n)
    return out


def _set_onehot(out: np.ndarray, start: int, G: np.ndarray, n: int, value=1.0) -> None:
    """Write the one-hot of G into ``out`` from column ``start`` on, in place (features fill one
    preallocated array); ``value``: a scalar or one per row and gene, e.g. 0 for switched-off slots."""
    out[np.arange(len(G))[:, None], start + np.arange(G.shape[1]) * n + G] = value


def _as_genomes(genomes, n_var: int) -> np.ndarray:
    G = np.asarray(genomes, dtype=np.int64)
    if G.ndim == 1:
        G = G[None, :]
    if G.ndim != 2 or G.shape[1] != n_var:
        raise HwnasError(f"genomes must have shape (n, {n_var}), got {np.shape(genomes)}")
    return G


def _conv_work(cin, cout, k, h_in, h_out, groups=1, bias=False) -> np.ndarray:
    """[MACs, weight values, activation values] of one conv (a linear layer: k = h = 1) for one
    image; arguments may be arrays over architectures (the result is then (3, n))."""
    per_output = cin // groups * k * k
    parts = np.broadcast_arrays(h_out * h_out * cout * per_output, cout * per_output + (cout if bias else 0),
                                cin * h_in * h_in + cout * h_out * h_out)
    return np.stack(parts).astype(float)


def _typed_work(onehot: np.ndarray, work: np.ndarray) -> np.ndarray:
    """(n, 4 t) from ``onehot`` (n, blocks, t: each block's type) and ``work`` (n, blocks, 3: its MACs,
    weights and activations): per type how many blocks, then their summed work (TabularSpace.typed_work)."""
    per_type = np.einsum("nbt,nbc->nct", onehot.astype(float), work).reshape(len(work), -1)
    return np.hstack([onehot.sum(1), per_type]).astype(float)


def _make_divisible(v):
    """timm's ``make_divisible(v, 8)`` (channel rounding of OFA / :mod:`hwnas.supernets`), on arrays."""
    v = np.asarray(v, dtype=float)
    out = np.maximum(8, (v + 4).astype(np.int64) // 8 * 8)
    return np.where(out < 0.9 * v, out + 8, out)


class TabularSpace:
    """Genome encoding of one benchmark's architectures (no data): parse, format, features."""

    name: str = ""
    arch_column: str = ""
    space: SearchSpace

    def arch_to_genome(self, arch: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def genome_to_arch(self, genome: Sequence[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def macs(self, genomes) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, genomes) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def counts(self, genomes) -> np.ndarray:  # pragma: no cover - abstract
        """(n, 3): MACs, weight values and activation values moved by one image's forward pass
        (module docstring, "Work counts"); the input of the analytical energy estimate."""
        raise NotImplementedError

    def layers(self, genomes) -> np.ndarray:  # pragma: no cover - abstract
        """(n,): the operators that run (conv, linear and pooling layers) beyond the fixed ones: a
        proxy of per-kernel overhead, which dominates small-batch GPU latency."""
        raise NotImplementedError

    # Named column sets of :meth:`op_counts`, each one analytical cost model (a cost per operator type).
    op_count_sets: Dict[str, List[int]] = {}

    def op_counts(self, genomes) -> np.ndarray:  # pragma: no cover - abstract
        """(n, k): how many operators of each type run (:attr:`op_count_sets` names the column sets).
        Runtimes that pay per operator (int8 kernels, GPU launches, framework overhead) cost by type,
        not by MACs."""
        raise NotImplementedError

    def typed_work(self, genomes) -> np.ndarray:
        """(n, 4 t): per block type (``t`` of them), how many blocks of that type run and their MACs,
        weight values and activation values moved (millions): a roofline per block type, whose
        coefficients a device's samples can fit (a GPU's depthwise kernels cost per launch, an int8
        runtime's by size). Empty for spaces whose op counts already say this (NB201: every edge of
        a type does the same work)."""
        return np.zeros((len(_as_genomes(genomes, self.space.n_var)), 0))

    def additive_features(self, genomes) -> np.ndarray:
        """Per-layer indicators for an additive (lookup-table) cost model."""
        G = _as_genomes(genomes, self.space.n_var)
        return _onehot(G, int(self.space.upper.max()) + 1)

    def check(self, genomes) -> np.ndarray:
        G = _as_genomes(genomes, self.space.n_var)
        if (G < 0).any() or (G > self.space.upper).any():
            raise HwnasError(f"genome out of bounds for space {self.name!r}")
        return G

    def samples(self, genomes, values):
        """Checked (genomes, values) for fitting a predictor: rows with a non-finite value dropped."""
        G = self.check(genomes)
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(y) != len(G):
            raise HwnasError(f"fit: {len(G)} genomes but {len(y)} values")
        ok = np.isfinite(y)
        if ok.sum() < 2:
            raise HwnasError("fit: need at least 2 finite samples")
        return G[ok], y[ok]

    def spec(self) -> dict:
        """JSON-able description that :func:`space_from_spec` turns back into this space."""
        return {"name": self.name}


# --------------------------------------------------------------------------- NB201
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_OP_TYPES = (1, 2, 3, 4)  # the operators that run something (not ``none``)
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from, to), string order
NB201_STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, feature-map size) of the three stages
NB201_CELLS = 5  # cells per stage


def _nb201_work(G: np.ndarray) -> np.ndarray:
    """(3, n) conv/linear work of NB201 networks (pooling excluded)."""
    fixed = _conv_work(3, 16, 3, 32, 32) + _conv_work(64, 10, 1, 1, 1, bias=True)  # stem, classifier
    for (cin, _), (cout, h) in zip(NB201_STAGES, NB201_STAGES[1:]):  # residual reduction blocks
        fixed += _conv_work(cin, cout, 3, 2 * h, h) + _conv_work(cout, cout, 3, h, h) + _conv_work(cin, cout, 1, h, h)
    work = np.repeat(fixed[:, None], len(G), axis=1)
    for c, h in NB201_STAGES:
        for op, k in ((2, 1), (3, 3)):  # nor_conv_1x1, nor_conv_3x3 (none, skip and pooling have no conv)
            work += np.outer(_conv_work(c, c, k, h, h), NB201_CELLS * (G == op).sum(1))
    return work


class Nb201Space(TabularSpace):
    name = "nb201"
    arch_column = "arch_str"

    def __init__(self):
        self.space = SearchSpace(
            [Choice(f"edge_{a}_{b}", NB201_OPS) for a, b in NB201_EDGES], name="nb201"
        )
        # All 5^6 cells are few, so features are precomputed once and looked up by code.
        all_genomes = np.array(np.unravel_index(np.arange(5**6), (5,) * 6)).T
        self._feature_table = self._compute_features(all_genomes)
        self._macs_table = self._compute_macs(all_genomes)
        self._counts_table = _nb201_work(all_genomes).T
        live = self.live_edges(all_genomes)
        by_type = [all_genomes == op for op in NB201_OP_TYPES]
        self._op_table = np.stack([b.sum(1) for b in by_type] + [(b & live).sum(1) for b in by_type], 1).astype(float)

    def arch_to_genome(self, arch: str) -> np.ndarray:
        nodes = arch.strip().strip("|").split("|+|") if isinstance(arch, str) else []
        genome = []
        try:
            if len(nodes) != 3:
                raise ValueError
            for target, node in enumerate(nodes, start=1):
                tokens = node.split("|")
                if len(tokens) != target:
                    raise ValueError
                for source, token in enumerate(tokens):
                    op, src = token.split("~")
                    if int(src) != source:
                        raise ValueError
                    genome.append(NB201_OPS.index(op))
        except ValueError:
            raise HwnasError(
                f"invalid NB201 arch string {arch!r}; expected like "
                "'|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...~0|...~1|...~2|'"
            ) from None
        return np.array(genome, dtype=np.int64)

    def genome_to_arch(self, genome: Sequence[int]) -> str:
        g = self.check(genome)[0]
        ops = [NB201_OPS[i] for i in g]
        nodes = [ops[0:1], ops[1:3], ops[3:6]]
        return "|" + "|+|".join("|".join(f"{op}~{j}" for j, op in enumerate(n)) for n in nodes) + "|"

    @staticmethod
    def _code(G: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(G.T, (5,) * 6)

    @staticmethod
    def live_edges(G: np.ndarray) -> np.ndarray:
        """(n, 6) bool: edge is not ``none`` and lies on an input -> output path."""
        on = G != 0
        e01, e02, e12, e03, e13, e23 = on.T
        reach1 = e01
        reach2 = e02 | (reach1 & e12)
        # feeds[k]: node k reaches node 3 through non-none edges
        feeds2 = e23
        feeds1 = e13 | (e12 & feeds2)
        from_in = np.stack([np.ones_like(e01), np.ones_like(e01), reach1, np.ones_like(e01), reach1, reach2], 1)
        to_out = np.stack([feeds1, feeds2, feeds2, np.ones_like(e01), np.ones_like(e01), np.ones_like(e01)], 1)
        return on & from_in & to_out

    def _compute_macs(self, G: np.ndarray) -> np.ndarray:
        pool = sum(NB201_CELLS * (G == 4).sum(1) * 9 * h * h * c for c, h in NB201_STAGES)  # 3x3 avg-pool edges
        pool += sum(h * h * cin * 4 for (cin, _), (_, h) in zip(NB201_STAGES, NB201_STAGES[1:]))  # 2x2 shortcut pools
        return _nb201_work(G)[0] + pool

    def _compute_features(self, G: np.ndarray) -> np.ndarray:
        live = self.live_edges(G)
        onehot = _onehot(G, 5)
        live_onehot = onehot * np.repeat(live, 5, axis=1)
        counts = np.stack([(G == k).sum(1) for k in range(5)], 1) / 6.0
        live_counts = np.stack([((G == k) & live).sum(1) for k in range(5)], 1) / 6.0
        connected = live.any(1, keepdims=True)
        macs = self._compute_macs(G)
        log_macs = (np.log(macs) - np.log(macs.min()))[:, None] / 4.0
        return np.concatenate(
            [onehot, live_onehot, counts, live_counts, connected, log_macs], 1
        ).astype(np.float32)

    def macs(self, genomes) -> np.ndarray:
        return self._macs_table[self._code(self.check(genomes))]

    def features(self, genomes) -> np.ndarray:
        return self._feature_table[self._code(self.check(genomes))]

    def layers(self, genomes) -> np.ndarray:
        """Conv and pooling edges of the 15 cells."""
        return NB201_CELLS * 3 * np.isin(self.check(genomes), (2, 3, 4)).sum(1).astype(float)

    def counts(self, genomes) -> np.ndarray:
        return self._counts_table[self._code(self.check(genomes))]

    # Every edge of each type, and only the live ones (a runtime that prunes dead edges runs those).
    op_count_sets = {"ops": [0, 1, 2, 3], "live_ops": [4, 5, 6, 7]}

    def op_counts(self, genomes) -> np.ndarray:
        """(n, 8): edges that are skip, 1x1 conv, 3x3 conv, 3x3 pooling; then the same among live edges."""
        return self._op_table[self._code(self.check(genomes))]


# --------------------------------------------------------------------------- FBNet
FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
FBNET_STAGES = ((16, 1, 1), (24, 4, 1), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))


def _fbnet_layout():
    """Per block: (c_in, c_out, stride, input size) for a 32x32 input."""
    layout, c_in, h = [], 16, 32
    for c_out, n, stride in FBNET_STAGES:
        for i in range(n):
            s = stride if i == 0 else 1
            layout.append((c_in, c_out, s, h))
            c_in, h = c_out, -(-h // s)
    return layout


class FbnetSpace(TabularSpace):
    name = "fbnet"
    arch_column = "arch_key"

    def __init__(self):
        self.space = SearchSpace([Choice(f"block_{i}", FBNET_OPS) for i in range(22)], name="fbnet")
        work = np.zeros((22, len(FBNET_OPS), 3))
        for b, (cin, cout, s, h) in enumerate(_fbnet_layout()):
            ho = -(-h // s)
            for j, op in enumerate(FBNET_OPS):
                if op == "skip":
                    if cin != cout or s != 1:
                        work[b, j] = _conv_work(cin, cout, 1, h, ho)
                    continue
                m = re.fullmatch(r"k(\d)_e(\d)(?:_g(\d))?", op)
                k, e, g = int(m[1]), int(m[2]), int(m[3] or 1)
                hidden = cin * e
                work[b, j] = (_conv_work(cin, hidden, 1, h, h, groups=g)  # expand, depthwise, project
                              + _conv_work(hidden, hidden, k, h, ho, groups=hidden)
                              + _conv_work(hidden, cout, 1, ho, ho, groups=g))
        self.block_work = work  # (22, 9, 3)
        self._block_layers = np.where(np.array(FBNET_OPS) == "skip", (work[:, :, 0] > 0) * 1.0, 3.0)
        self.block_macs = work[:, :, 0]
        h_out = _fbnet_layout()[-1][3]
        self.fixed_work = (_conv_work(3, 16, 3, 32, 32) + _conv_work(352, 1504, 1, h_out, h_out)
                           + _conv_work(1504, 100, 1, 1, 1, bias=True))
        self.fixed_macs = self.fixed_work[0]
        # A feature: each block's MACs relative to the largest op of that block.
        self._relative_block_macs = self.block_macs / self.block_macs.max(1, keepdims=True)

    def arch_to_genome(self, arch: str) -> np.ndarray:
        parts = arch.strip().split("-") if isinstance(arch, str) else []
        if len(parts) != 22 or any(p not in FBNET_OPS for p in parts):
            raise HwnasError(
                f"invalid FBNet arch key {arch!r}; expected 22 of {', '.join(FBNET_OPS)} joined by '-'"
            )
        return np.array([FBNET_OPS.index(p) for p in parts], dtype=np.int64)

    def genome_to_arch(self, genome: Sequence[int]) -> str:
        return "-".join(FBNET_OPS[i] for i in self.check(genome)[0])

    def _per_block(self, G: np.ndarray) -> np.ndarray:
        return self.block_macs[np.arange(22)[None, :], G]

    def macs(self, genomes) -> np.ndarray:
        return self._per_block(self.check(genomes)).sum(1) + self.fixed_macs

    def layers(self, genomes) -> np.ndarray:
        """Three convs per inverted-residual block, one per skip that needs a projection."""
        return self._block_layers[np.arange(22)[None, :], self.check(genomes)].sum(1)

    def counts(self, genomes) -> np.ndarray:
        G = self.check(genomes)
        return self.block_work[np.arange(22)[None, :], G].sum(1) + self.fixed_work

    op_count_sets = {"ops": list(range(len(FBNET_OPS)))}

    def op_counts(self, genomes) -> np.ndarray:
        """(n, 9): blocks of each op type (:data:`FBNET_OPS`)."""
        G = self.check(genomes)
        n_ops = len(FBNET_OPS)
        counts = np.bincount((np.arange(len(G))[:, None] * n_ops + G).ravel(), minlength=len(G) * n_ops)
        return counts.reshape(len(G), n_ops).astype(float)

    def typed_work(self, genomes) -> np.ndarray:
        """(n, 36): per op type (:data:`FBNET_OPS`) its blocks, then their MACs, weights and activations."""
        G = self.check(genomes)
        work = self.block_work[np.arange(22)[None, :], G] / 1e6  # (n, 22, 3)
        return _typed_work(G[:, :, None] == np.arange(len(FBNET_OPS))[None, None, :], work)  # types (n, 22, 9)

    def features(self, genomes) -> np.ndarray:
        """(n, 230): per block the op one-hot (22 x 9), relative block MACs (22), the share of
        blocks using each op (9), log total MACs (1); table lookups into one array (prediction
        spends its time here)."""
        G = self.check(genomes)
        n_blocks, n_ops = self.block_macs.shape
        onehot_end, relative_end = n_blocks * n_ops, n_blocks * n_ops + n_blocks
        out = np.zeros((len(G), relative_end + n_ops + 1), dtype=np.float32)
        _set_onehot(out, 0, G, n_ops)
        out[:, onehot_end:relative_end] = self._relative_block_macs[np.arange(n_blocks), G]
        op_counts = np.bincount((np.arange(len(G))[:, None] * n_ops + G).ravel(), minlength=len(G) * n_ops)
        out[:, relative_end:-1] = op_counts.reshape(len(G), n_ops) / n_blocks
        total = self._per_block(G).sum(1) + self.fixed_macs
        out[:, -1] = (np.log(total) - np.log(self.fixed_macs)) / 4.0
        return out


# --------------------------------------------------------------------------- OFA MobileNetV3
OFA_KERNELS = (3, 5, 7)
OFA_EXPANDS = (3, 4, 6)
OFA_DEPTHS = (2, 3, 4)
OFA_STAGES = ((24, 2, False), (40, 2, True), (80, 2, False), (112, 1, True), (160, 2, True))
_OFA_KEY = re.compile(r"ks=([357]{20});e=([346]{20});d=([234]{5});r=(\d+)")
_OFA_ACTIVE_BY_DEPTH = np.arange(4)[None, :] < np.array(OFA_DEPTHS)[:, None]  # (depth choice, slot of a stage)


class OfaSpace(TabularSpace):
    """Genes: 20 kernel slots, 20 expand slots, 5 stage depths, input resolution."""

    name = "ofa_mbv3"
    arch_column = "arch_key"

    def __init__(self, resolutions: Sequence[int] = tuple(range(128, 225, 4))):
        self.resolutions = tuple(sorted(int(r) for r in resolutions))
        self.space = SearchSpace(
            [Choice(f"ks_{i}", OFA_KERNELS) for i in range(20)]
            + [Choice(f"e_{i}", OFA_EXPANDS) for i in range(20)]
            + [Choice(f"d_{i}", OFA_DEPTHS) for i in range(5)]
            + [Choice("r", self.resolutions)],
            name="ofa_mbv3",
        )
        self._slot_macs, self._fixed_macs_by_res = self._mac_tables()
        largest_blocks = self._slot_macs[:, -1, -1, -1]  # largest kernel and expand at the largest resolution
        self._per_pixel_scale = float(largest_blocks.max() / float(self.resolutions[-1]) ** 2)
        r = np.asarray(self.resolutions)
        self._scaled_resolutions = (r - r[0]) / max(1, r[-1] - r[0])

    def spec(self) -> dict:
        return {"name": self.name, "resolutions": list(self.resolutions)}

    def arch_to_genome(self, arch: str) -> np.ndarray:
        m = _OFA_KEY.fullmatch(arch.strip()) if isinstance(arch, str) else None
        if m is None or int(m[4]) not in self.resolutions:
            raise HwnasError(
                f"invalid OFA arch key {arch!r}; expected 'ks=<20 of 3/5/7>;e=<20 of 3/4/6>;"
                f"d=<5 of 2/3/4>;r=<one of {list(self.resolutions)}>'"
            )
        ks = [OFA_KERNELS.index(int(c)) for c in m[1]]
        es = [OFA_EXPANDS.index(int(c)) for c in m[2]]
        ds = [OFA_DEPTHS.index(int(c)) for c in m[3]]
        return np.array(ks + es + ds + [self.resolutions.index(int(m[4]))], dtype=np.int64)

    def genome_to_arch(self, genome: Sequence[int]) -> str:
        g = self.check(genome)[0]
        ks = "".join(str(OFA_KERNELS[i]) for i in g[:20])
        es = "".join(str(OFA_EXPANDS[i]) for i in g[20:40])
        ds = "".join(str(OFA_DEPTHS[i]) for i in g[40:45])
        return f"ks={ks};e={es};d={ds};r={self.resolutions[g[45]]}"

    def _decode(self, G: np.ndarray):
        k = np.asarray(OFA_KERNELS)[G[:, :20]]
        e = np.asarray(OFA_EXPANDS)[G[:, 20:40]]
        d = np.asarray(OFA_DEPTHS)[G[:, 40:45]]
        r = np.asarray(self.resolutions)[G[:, 45]]
        active = np.arange(4)[None, None, :] < d[:, :, None]  # (n, 5, 4)
        return k, e, d, r, active.reshape(-1, 20)

    def _block_work(self, G: np.ndarray, se_width):
        """(3, n, 20) work of each block slot (0 when inactive) and (3, n) of the fixed layers;
        ``se_width(hidden)``: squeeze-excite channels."""
        k, e, d, r, active = self._decode(G)
        h = -(-r // 2)
        # stem, then the fixed first block (3x3 depthwise, 1x1 project)
        fixed = _conv_work(3, 16, 3, r, h) + _conv_work(16, 16, 3, h, h, groups=16) + _conv_work(16, 16, 1, h, h)
        blocks = np.zeros((3,) + k.shape)
        c_in = 16
        for s, (c_out, stride, se) in enumerate(OFA_STAGES):
            for i in range(4):
                slot = 4 * s + i
                st = stride if i == 0 else 1
                cin = c_in if i == 0 else c_out
                ho = -(-h // st)
                hidden = cin * e[:, slot]
                w = (_conv_work(cin, hidden, 1, h, h) + _conv_work(hidden, hidden, k[:, slot], h, ho, groups=hidden)
                     + _conv_work(hidden, c_out, 1, ho, ho))
                if se:  # two biased 1x1 convs on the pooled map
                    rd = se_width(hidden)
                    w = w + _conv_work(hidden, rd, 1, 1, 1, bias=True) + _conv_work(rd, hidden, 1, 1, 1, bias=True)
                blocks[:, :, slot] = w
                h = ho
            c_in = c_out
        classifier = _conv_work(960, 1280, 1, 1, 1, bias=True) + _conv_work(1280, 1000, 1, 1, 1, bias=True)
        fixed = fixed + _conv_work(160, 960, 1, h, h) + classifier[:, None]
        return blocks * active, fixed

    def _block_macs(self, G: np.ndarray):
        """(n, 20) MACs of each block slot (0 when inactive) and (n,) fixed-layer MACs."""
        blocks, fixed = self._block_work(G, lambda hidden: hidden // 4)
        return blocks[0], fixed[0]

    def _mac_tables(self):
        """MACs of each block slot by (slot, kernel, expand, resolution) and of the fixed layers by
        resolution, for the features. A slot's MACs depend on nothing else, so one probe per
        (kernel, expand, resolution), all slots alike and every stage at full depth, fills them."""
        kernel, expand, res = np.meshgrid(
            np.arange(len(OFA_KERNELS)), np.arange(len(OFA_EXPANDS)), np.arange(len(self.resolutions)), indexing="ij"
        )
        probe = np.zeros((kernel.size, self.space.n_var), dtype=np.int64)
        probe[:, :20], probe[:, 20:40] = kernel.reshape(-1, 1), expand.reshape(-1, 1)
        probe[:, 40:45], probe[:, 45] = len(OFA_DEPTHS) - 1, res.reshape(-1)
        blocks, fixed = self._block_macs(probe)
        return blocks.T.reshape((20,) + kernel.shape), fixed.reshape(kernel.shape)[0, 0]

    def _slot_lookup(self, table: np.ndarray, G: np.ndarray) -> np.ndarray:
        """Per active block slot, ``table[slot, kernel, expand, resolution]`` (0 for inactive slots)."""
        picked = table[np.arange(20), G[:, :20], G[:, 20:40], G[:, 45:46]]
        active = self._active_slots(G)
        return picked * (active[..., None] if picked.ndim == 3 else active)

    def macs(self, genomes) -> np.ndarray:
        G = self.check(genomes)  # table lookups: equal to _block_macs summed (integers, exact in float64)
        return self._slot_lookup(self._slot_macs, G).sum(1) + self._fixed_macs_by_res[G[:, 45]]

    def counts(self, genomes) -> np.ndarray:
        G = self.check(genomes)
        slot_work, fixed_work_by_res = self._work()
        return self._slot_lookup(slot_work, G).sum(1) + fixed_work_by_res[G[:, 45]]

    op_count_sets = {"ops": [0, 1, 2, 3, 4, 5]}

    def op_counts(self, genomes) -> np.ndarray:
        """(n, 6): active blocks with kernel 3, 5, 7, then with expand 3, 4, 6."""
        G = self.check(genomes)
        active = self._active_slots(G)
        kernel = [((G[:, :20] == i) & active).sum(1) for i in range(len(OFA_KERNELS))]
        expand = [((G[:, 20:40] == i) & active).sum(1) for i in range(len(OFA_EXPANDS))]
        return np.stack(kernel + expand, 1).astype(float)

    def typed_work(self, genomes) -> np.ndarray:
        """(n, 36): per (kernel, expand) block type its active blocks, then their MACs, weights and activations."""
        G = self.check(genomes)
        work = self._slot_lookup(self._work()[0], G) / 1e6  # (n, 20, 3), 0 where inactive
        kinds = len(OFA_KERNELS) * len(OFA_EXPANDS)
        onehot = ((G[:, :20] * len(OFA_EXPANDS) + G[:, 20:40])[:, :, None] == np.arange(kinds)) & self._active_slots(G)[:, :, None]
        return _typed_work(onehot, work)

    def layers(self, genomes) -> np.ndarray:
        """Three convs per active block, two more in squeeze-excite stages."""
        G = self.check(genomes)
        per_slot = np.repeat([3.0 + 2.0 * se for _, _, se in OFA_STAGES], 4)
        return self._active_slots(G) @ per_slot

    def _work(self):
        """(slot work, fixed work by resolution), built once on first use."""
        if getattr(self, "_slot_work", None) is None:
            self._slot_work, self._fixed_work_by_res = self._work_tables()
        return self._slot_work, self._fixed_work_by_res

    def _work_tables(self):
        """Like :meth:`_mac_tables`, the three work counts of each slot and of the fixed layers."""
        kernel, expand, res = np.meshgrid(
            np.arange(len(OFA_KERNELS)), np.arange(len(OFA_EXPANDS)), np.arange(len(self.resolutions)), indexing="ij"
        )
        probe = np.zeros((kernel.size, self.space.n_var), dtype=np.int64)
        probe[:, :20], probe[:, 20:40] = kernel.reshape(-1, 1), expand.reshape(-1, 1)
        probe[:, 40:45], probe[:, 45] = len(OFA_DEPTHS) - 1, res.reshape(-1)
        blocks, fixed = self._block_work(probe, lambda hidden: _make_divisible(hidden / 4))
        slot = blocks.transpose(2, 1, 0).reshape((20,) + kernel.shape + (3,))
        return slot, fixed.T.reshape(kernel.shape + (3,))[0, 0]

    def additive_features(self, genomes) -> np.ndarray:
        """Active-slot kernel and expand indicators plus resolution (inactive slots cost 0)."""
        G = self.check(genomes)
        out = np.zeros((len(G), 122), dtype=np.float32)
        self._set_slot_indicators(out, G, self._active_slots(G))
        return out

    def _active_slots(self, G: np.ndarray) -> np.ndarray:
        return _OFA_ACTIVE_BY_DEPTH[G[:, 40:45]].reshape(len(G), 20)

    def _set_slot_indicators(self, out: np.ndarray, G: np.ndarray, active: np.ndarray) -> None:
        """Columns 0-121, the additive features: kernel one-hot (20 x 3) and expand one-hot
        (20 x 3) of the active slots, scaled resolution and its square."""
        _set_onehot(out, 0, G[:, :20], len(OFA_KERNELS), active)
        _set_onehot(out, 60, G[:, 20:40], len(OFA_EXPANDS), active)
        res = self._scaled_resolutions[G[:, 45]]
        out[:, 120], out[:, 121] = res, res**2

    def features(self, genomes) -> np.ndarray:
        """(n, 184): the additive features (122), active slots (20), depth one-hot (5 x 3), block
        MACs per pixel (20), depths (5), resolution (1), log total MACs (1); table lookups into
        one array (prediction spends its time here)."""
        G = self.check(genomes)
        depth, res = G[:, 40:45], G[:, 45]
        active = self._active_slots(G)
        out = np.zeros((len(G), 184), dtype=np.float32)
        self._set_slot_indicators(out, G, active)
        out[:, 122:142] = active
        _set_onehot(out, 142, depth, len(OFA_DEPTHS))
        blocks = self._slot_macs[np.arange(20), G[:, :20], G[:, 20:40], res[:, None]] * active
        r = np.asarray(self.resolutions, dtype=float)[res]
        # Block MACs scale with r^2; dividing it out keeps block size and resolution apart.
        out[:, 157:177] = blocks / (r**2)[:, None] / self._per_pixel_scale
        out[:, 177:182] = depth / 2.0  # (d - 2) / 2: the genes count depths from 2
        out[:, 182] = r / 224.0
        out[:, 183] = (np.log(blocks.sum(1) + self._fixed_macs_by_res[res]) - np.log(5e7)) / 2.0
        return out


def space_from_spec(spec: dict) -> TabularSpace:
    name = spec.get("name")
    if name == "nb201":
        return _nb201_space()
    if name == "fbnet":
        return _fbnet_space()
    if name == "ofa_mbv3":
        return OfaSpace(spec.get("resolutions", tuple(range(128, 225, 4))))
    raise HwnasError(f"unknown tabular space {name!r}; known: {', '.join(TABLE_FILES)}")


@lru_cache(maxsize=None)
def _nb201_space() -> Nb201Space:
    return Nb201Space()


@lru_cache(maxsize=None)
def _fbnet_space() -> FbnetSpace:
    return FbnetSpace()


# --------------------------------------------------------------------------- table
def _read_csv(path: Path) -> Tuple[List[str], List[List[str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise HwnasError(f"benchmark table not found: {path}") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as err:
        # EOFError: a truncated gzip file; the whole file is read, so damage anywhere shows here.
        raise HwnasError(f"cannot read benchmark table {path}: {err or type(err).__name__}") from None
    if not rows:
        raise HwnasError(f"benchmark table {path} is empty")
    if not any(any(cell.strip() for cell in r) for r in rows[1:]):
        raise HwnasError(f"benchmark table {path} has a header but no rows; at least one row is needed")
    return rows[0], rows[1:]


def _to_float(values: Sequence[str]) -> np.ndarray | None:
    try:
        return np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    except ValueError:
        return None


@dataclass
class _Parsed:
    columns: List[str]
    arch_ids: List[str]
    arch_idx: np.ndarray
    numeric: Dict[str, np.ndarray]
    text: Dict[str, List[str]]
    resolutions: Tuple[int, ...]


@lru_cache(maxsize=8)
def _load_cached(space: str, path: str, mtime: float) -> "TabularBenchmark":
    """One parsed table per (file, mtime): a changed file is read again."""
    parsed = _parse(space, path)
    if space == "ofa_mbv3":
        tspace: TabularSpace = OfaSpace(parsed.resolutions or tuple(range(128, 225, 4)))
    else:
        tspace = space_from_spec({"name": space})
    return TabularBenchmark(tspace, parsed, Path(path))


def _parse(space_name: str, path: str) -> _Parsed:
    header, rows = _read_csv(Path(path))
    arch_column = {"nb201": "arch_str"}.get(space_name, "arch_key")
    for needed in ("arch_idx", arch_column):
        if needed not in header:
            raise HwnasError(f"benchmark table {path} has no {needed!r} column (space {space_name})")
    if any(len(r) != len(header) for r in rows):
        raise HwnasError(f"benchmark table {path} has rows with a wrong number of fields")
    cols = list(zip(*rows)) if rows else [()] * len(header)
    numeric, text = {}, {}
    for name, values in zip(header, cols):
        as_float = None if name == arch_column or name == "op_idx" else _to_float(values)
        if as_float is None and name.endswith((LATENCY_SUFFIX, "_acc")):  # a metric column must be numbers
            line, bad = next((i, v) for i, v in enumerate(values, start=2) if _to_float([v]) is None)
            raise HwnasError(f"benchmark table {path}: row {line}: column {name}: {bad!r} is not a number")
        if as_float is None:
            text[name] = list(values)
        else:
            numeric[name] = as_float
    if "arch_idx" not in numeric or np.isnan(numeric["arch_idx"]).any():
        raise HwnasError(f"benchmark table {path}: 'arch_idx' must be an integer in every row")
    arch_ids = text[arch_column]
    resolutions: Tuple[int, ...] = ()
    if space_name == "ofa_mbv3":
        found = {m[4] for m in (_OFA_KEY.fullmatch(a) for a in arch_ids) if m}
        resolutions = tuple(sorted(int(r) for r in found))
    return _Parsed(header, arch_ids, numeric["arch_idx"].astype(np.int64), numeric, text, resolutions)


class TabularBenchmark:
    """One benchmark table bound to its search space.

    ``genomes[i]`` is the genome of table row ``i``; ``lookup`` answers metric queries for
    any genomes (NaN where the table has no such architecture or no value).
    """

    def __init__(self, tspace: TabularSpace, parsed: _Parsed, path: Path):
        self.tspace = tspace
        self.space: SearchSpace = tspace.space
        self.name = tspace.name
        self.path = path
        self.columns: List[str] = list(parsed.columns)
        self.arch_ids: List[str] = parsed.arch_ids
        self.arch_idx: np.ndarray = parsed.arch_idx
        self._numeric = parsed.numeric
        try:
            genomes = [tspace.arch_to_genome(a) for a in self.arch_ids]
        except HwnasError as err:
            raise HwnasError(f"{path.name}: {err}") from None
        self.genomes: np.ndarray = np.array(genomes, dtype=np.int64).reshape(len(genomes), self.space.n_var)
        self._row_of = {g.tobytes(): i for i, g in enumerate(self.genomes)}
        self._row_of_idx = {int(a): i for i, a in enumerate(self.arch_idx)}

    @classmethod
    def load(cls, space: str, path: str | os.PathLike | None = None) -> "TabularBenchmark":
        """Load ``space`` (``nb201``, ``fbnet`` or ``ofa_mbv3``) from ``path`` (default: the shared data)."""
        if space not in TABLE_FILES:
            raise HwnasError(f"unknown tabular space {space!r}; known: {', '.join(TABLE_FILES)}")
        p = Path(path) if path is not None else default_data_dir() / TABLE_FILES[space]
        if p.is_dir():
            p = p / TABLE_FILES[space]
        if not p.is_file():
            raise HwnasError(f"benchmark table not found: {p}")
        p = p.resolve()
        # Parsed tables are cached in-process (keyed by file and mtime); treat them as read-only.
        return _load_cached(space, str(p), p.stat().st_mtime)

    # --- columns ------------------------------------------------------------------
    @property
    def devices(self) -> List[str]:
        """Device names of the ``<device>_latency_ms`` columns present in the table."""
        return [c[: -len(LATENCY_SUFFIX)] for c in self.columns if c.endswith(LATENCY_SUFFIX)]

    def column_name(self, column: str) -> str:
        """Accept a column name or a device name (-> its latency column)."""
        if column in self._numeric:
            return column
        if column + LATENCY_SUFFIX in self._numeric:
            return column + LATENCY_SUFFIX
        known = ", ".join(self.devices) or "(none)"
        raise HwnasError(f"{self.path.name} has no numeric column or device {column!r}; devices: {known}")

    def values(self, column: str) -> np.ndarray:
        """The whole column, in row order (NaN = no measurement)."""
        return self._numeric[self.column_name(column)]

    # --- architectures --------------------------------------------------------------
    def arch_to_genome(self, arch: str) -> np.ndarray:
        return self.tspace.arch_to_genome(arch)

    def genome_to_arch(self, genome: Sequence[int]) -> str:
        return self.tspace.genome_to_arch(genome)

    def rows(self, genomes) -> np.ndarray:
        """Row index of each genome, -1 where the table does not hold it."""
        G = _as_genomes(genomes, self.space.n_var)
        return np.array([self._row_of.get(g.tobytes(), -1) for g in G], dtype=np.int64)

    def rows_of_arch_idx(self, arch_idx: Sequence[int]) -> np.ndarray:
        try:
            return np.array([self._row_of_idx[int(a)] for a in arch_idx], dtype=np.int64)
        except KeyError as err:
            raise HwnasError(f"{self.path.name} has no arch_idx {err.args[0]}") from None

    def lookup(self, genomes, column: str) -> np.ndarray:
        values = self.values(column)
        rows = self.rows(genomes)
        out = np.full(rows.shape, np.nan)
        out[rows >= 0] = values[rows[rows >= 0]]
        return out

    def reference_archs(self) -> np.ndarray:
        """HELP's 10 reference ``arch_idx`` for this space (hardware-embedding architectures)."""
        return np.array(REFERENCE_ARCHS[self.name], dtype=np.int64)

    def reference_genomes(self) -> np.ndarray:
        return self.genomes[self.rows_of_arch_idx(self.reference_archs())]

    # --- predictor inputs ---------------------------------------------------------------
    def features(self, genomes) -> np.ndarray:
        return self.tspace.features(genomes)

    def macs(self, genomes) -> np.ndarray:
        return self.tspace.macs(genomes)

    def __len__(self) -> int:
        return len(self.arch_ids)

    def __repr__(self) -> str:
        return f"TabularBenchmark({self.name!r}, rows={len(self)}, devices={len(self.devices)})"
