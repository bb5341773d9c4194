"""Tabular benchmark spaces: parsing round-trips, lookup, features, MACs, work counts and input errors."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.devices.energy import Counts, count_model
from hwnas.errors import HwnasError
from hwnas.tabular import (
    FBNET_OPS,
    NB201_OPS,
    OFA_DEPTHS,
    OFA_EXPANDS,
    OFA_KERNELS,
    OFA_STAGES,
    FbnetSpace,
    Nb201Space,
    OfaSpace,
    TabularBenchmark,
    _fbnet_layout,
    default_data_dir,
)

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "nb201.csv.gz").is_file(), reason="../shared/data absent")

ARCH_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ARCH_B = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"


def write_table(path, rows, header):
    with gzip.open(path, "wt") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(v) for v in r) + "\n")
    return path


@pytest.fixture
def small_table(tmp_path):
    """A hand-written NB201-format table with a custom device set and an energy column."""
    header = ["arch_idx", "arch_str", "phone_x_latency_ms", "board_y_latency_ms", "board_y_energy_mJ"]
    rows = [[0, ARCH_A, 12.5, 3.0, 7.25], [1, ARCH_B, 4.0, "", 1.5]]
    return write_table(tmp_path / "custom.csv.gz", rows, header)


def test_custom_table_columns_devices_and_lookup(small_table):
    bench = TabularBenchmark.load("nb201", small_table)
    assert bench.devices == ["phone_x", "board_y"]
    assert bench.columns[-1] == "board_y_energy_mJ"
    G = np.stack([bench.arch_to_genome(ARCH_B), bench.arch_to_genome(ARCH_A), np.zeros(6, int)])
    np.testing.assert_array_equal(bench.lookup(G, "phone_x")[:2], [4.0, 12.5])
    out = bench.lookup(G, "board_y_latency_ms")
    assert np.isnan(out[0]) and out[1] == 3.0 and np.isnan(out[2])  # empty cell, row absent
    np.testing.assert_array_equal(bench.lookup(G[:2], "board_y_energy_mJ"), [1.5, 7.25])


def test_bad_inputs_raise_one_line_errors(small_table, tmp_path):
    bench = TabularBenchmark.load("nb201", small_table)
    with pytest.raises(HwnasError, match="no numeric column or device 'gold_6240'"):
        bench.lookup(bench.genomes, "gold_6240")
    with pytest.raises(HwnasError, match="not found"):
        TabularBenchmark.load("nb201", tmp_path / "missing.csv.gz")
    with pytest.raises(HwnasError, match="unknown tabular space"):
        TabularBenchmark.load("nb301", small_table)
    for bad in ["|conv~0|+|x~0|y~1|", "|nor_conv_3x3~0|", ARCH_A.replace("~2|", "~1|"), 42]:
        with pytest.raises(HwnasError, match="invalid NB201 arch string"):
            Nb201Space().arch_to_genome(bad)
    broken = write_table(tmp_path / "broken.csv.gz", [[0, "|bad~0|", 1.0]], ["arch_idx", "arch_str", "a_latency_ms"])
    with pytest.raises(HwnasError, match="invalid NB201 arch string"):
        TabularBenchmark.load("nb201", broken)
    no_arch = write_table(tmp_path / "noarch.csv.gz", [[0, 1.0]], ["arch_idx", "a_latency_ms"])
    with pytest.raises(HwnasError, match="no 'arch_str' column"):
        TabularBenchmark.load("nb201", no_arch)
    with pytest.raises(HwnasError, match="invalid FBNet arch key"):
        FbnetSpace().arch_to_genome("k3_e1-k9_e9")
    with pytest.raises(HwnasError, match="invalid OFA arch key"):
        OfaSpace().arch_to_genome("ks=7;e=6;d=2;r=224")
    with pytest.raises(HwnasError, match="out of bounds"):
        Nb201Space().features([[0, 0, 0, 0, 0, 5]])


def test_op_counts_count_the_operators_that_run_by_type():
    """Per-type operator counts (the proxy of runtimes that pay per operator): NB201 all edges and the
    live ones; FBNet blocks per op; OFA active blocks per kernel and per expand ratio."""
    nb = Nb201Space()
    # Node 1 (conv3x3) feeds nothing but node 2's none: its edge is dead; the other five run.
    g = nb.arch_to_genome("|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|")
    # skip, conv1x1, conv3x3, pool over all edges, then over the live ones
    assert nb.op_counts(g[None])[0].tolist() == [1, 1, 1, 1, 1, 1, 0, 1]
    cut = nb.arch_to_genome("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert nb.op_counts(cut[None])[0].tolist() == [0, 0, 2, 0, 0, 0, 0, 0]  # nothing reaches the output
    fb = FbnetSpace()
    G = fb.space.sample(np.random.default_rng(0), 50)
    c = fb.op_counts(G)
    assert c.sum(1).tolist() == [22] * 50 and c[:, FBNET_OPS.index("skip")].tolist() == (G == 8).sum(1).tolist()
    ofa = OfaSpace()
    G = ofa.space.sample(np.random.default_rng(0), 50)
    c = ofa.op_counts(G)
    depth = np.asarray(OFA_DEPTHS)[G[:, 40:45]].sum(1)
    assert c[:, :3].sum(1).tolist() == depth.tolist() and c[:, 3:].sum(1).tolist() == depth.tolist()
    for space, width in ((nb, 8), (fb, 9), (ofa, 6)):  # the named sets cover the columns
        assert sorted(sum(space.op_count_sets.values(), [])) == list(range(width))


def test_nb201_structure_and_macs():
    space = Nb201Space()
    all_conv3 = np.full((1, 6), 3)
    # NB201 reports 220.11 M FLOPs (MACs) for the all-3x3 cell and 7.78 M for the smallest.
    assert space.macs(all_conv3)[0] == pytest.approx(220.11e6, rel=2e-3)
    assert space.macs(np.zeros((1, 6), int))[0] == pytest.approx(7.78e6, rel=1e-2)
    # Output node 3 fed only by node 2, which is fed only by the dead node 1: not connected.
    dead = space.arch_to_genome("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_3x3~2|")
    live = space.live_edges(dead[None])[0]
    assert live.tolist() == [True, False, True, False, False, True]
    cut = space.arch_to_genome("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert not space.live_edges(cut[None]).any()
    F = space.features(np.stack([dead, cut]))
    assert F.shape == (2, 72) and np.isfinite(F).all()


# --------------------------------------------------------------------------- feature layout
# The shipped few-shot predictors (predictors/artifacts) were trained on these columns: the
# vectorised features must equal these plain one-architecture-at-a-time encoders.
def fbnet_reference_features(space: FbnetSpace, genome) -> list:
    ops = [int(g) for g in genome]
    row = [float(op == j) for op in ops for j in range(len(FBNET_OPS))]
    row += [space.block_macs[b, op] / space.block_macs[b].max() for b, op in enumerate(ops)]
    row += [ops.count(j) / 22 for j in range(len(FBNET_OPS))]
    return row + [np.log(space.macs(genome)[0] / space.fixed_macs) / 4]


def ofa_slot_macs(kernels, expands, r) -> list:
    """MACs of all 20 block slots (switched off or not) of OFA-MobileNetV3 at input r x r."""
    macs, c_in, h = [], 16, -(-r // 2)
    for c_out, stride, se in OFA_STAGES:
        for i in range(4):
            cin, ho = (c_in, -(-h // stride)) if i == 0 else (c_out, h)
            hidden = cin * expands[len(macs)]
            k = kernels[len(macs)]
            macs.append(h * h * cin * hidden + ho * ho * hidden * k * k + ho * ho * hidden * c_out
                        + (2 * hidden * (hidden // 4) if se else 0))
            h = ho
        c_in = c_out
    return macs


def ofa_reference_features(space: OfaSpace, genome) -> list:
    kernels = [OFA_KERNELS[g] for g in genome[:20]]
    expands = [OFA_EXPANDS[g] for g in genome[20:40]]
    depths = [OFA_DEPTHS[g] for g in genome[40:45]]
    r, r_lo, r_hi = space.resolutions[genome[45]], space.resolutions[0], space.resolutions[-1]
    active = [slot % 4 < depths[slot // 4] for slot in range(20)]
    res = (r - r_lo) / max(1, r_hi - r_lo)
    per_pixel_scale = max(ofa_slot_macs([7] * 20, [6] * 20, r_hi)) / r_hi**2
    row = [float(on and g == j) for genes in (genome[:20], genome[20:40]) for g, on in zip(genes, active)
           for j in range(3)]
    row += [res, res**2] + [float(on) for on in active]
    row += [float(g == j) for g in genome[40:45] for j in range(3)]
    row += [m * on / r**2 / per_pixel_scale for m, on in zip(ofa_slot_macs(kernels, expands, r), active)]
    row += [(d - 2) / 2 for d in depths] + [r / 224]
    return row + [(np.log(space.macs(genome)[0]) - np.log(5e7)) / 2]


@pytest.mark.parametrize("space, reference", [
    (FbnetSpace(), fbnet_reference_features),
    (OfaSpace(), ofa_reference_features),
    (OfaSpace((160, 192, 224)), ofa_reference_features),
])
def test_features_keep_the_layout_the_predictors_were_trained_on(space, reference):
    extremes = [space.space.smallest(), space.space.largest()]
    G = np.concatenate([extremes, space.space.sample(np.random.default_rng(5), 6)])
    F = space.features(G)
    assert F.dtype == np.float32
    np.testing.assert_allclose(F, np.array([reference(space, g) for g in G]), rtol=1e-6, atol=1e-6)
    if isinstance(space, OfaSpace):  # the additive (lookup-table) features lead the OFA features
        np.testing.assert_array_equal(space.additive_features(G), F[:, :122])


@needs_data
def test_all_rows_round_trip_and_lookup():
    for name, n_var in (("nb201", 6), ("fbnet", 22), ("ofa_mbv3", 46)):
        bench = TabularBenchmark.load(name)
        assert bench.genomes.shape == (len(bench), n_var)
        assert all(bench.genome_to_arch(g) == a for g, a in zip(bench.genomes, bench.arch_ids))
        assert all((bench.arch_to_genome(a) == g).all() for g, a in zip(bench.genomes[:200], bench.arch_ids))
        np.testing.assert_array_equal(bench.rows(bench.genomes), np.arange(len(bench)))
        dev = bench.devices[0]
        np.testing.assert_array_equal(bench.lookup(bench.genomes[:50], dev), bench.values(dev)[:50])
        assert len(bench.reference_archs()) == 10 and bench.reference_genomes().shape == (10, n_var)
        F = bench.features(bench.genomes)
        assert F.shape[0] == len(bench) and np.isfinite(F).all()
        assert TabularBenchmark.load(name) is bench  # cached in-process
    nb = TabularBenchmark.load("nb201")
    assert len(nb) == 15625 and len(nb.devices) >= 19
    assert len(np.unique(nb.genomes, axis=0)) == 15625  # the table is the whole space
    # The Eagle columns have no value for the 341 cells whose output is cut off.
    eagle = [d for d in nb.devices if d.startswith("eagle_")]
    if eagle:
        assert np.isnan(nb.lookup(nb.genomes, eagle[0])).sum() == 341
    ofa = TabularBenchmark.load("ofa_mbv3")
    assert ofa.tspace.resolutions == tuple(range(128, 225, 4))
    random_ofa = ofa.space.sample(np.random.default_rng(0), 5)
    assert np.isnan(ofa.lookup(random_ofa, ofa.devices[0])).all()  # not among the 5000 samples


# --------------------------------------------------------------------------- work counts (energy estimate)
def _relu_conv_bn(cin, cout, k, stride=1):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class _Nb201Cell(nn.Module):
    """NAS-Bench-201's cell from its string: node j = sum over i < j of op_ij(node i)."""

    def __init__(self, arch: str, c: int):
        super().__init__()
        make = {"none": lambda: _Zero(), "skip_connect": nn.Identity, "nor_conv_1x1": lambda: _relu_conv_bn(c, c, 1),
                "nor_conv_3x3": lambda: _relu_conv_bn(c, c, 3),
                "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False)}
        nodes = [[t.split("~") for t in node.split("|")] for node in arch.strip("|").split("|+|")]
        self.ops = nn.ModuleList(nn.ModuleList(make[op]() for op, _ in node) for node in nodes)
        self.sources = [[int(src) for _, src in node] for node in nodes]

    def forward(self, x):
        nodes = [x]
        for ops, sources in zip(self.ops, self.sources):
            nodes.append(sum(op(nodes[s]) for op, s in zip(ops, sources)))
        return nodes[-1]


class _Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


class _Nb201Reduction(nn.Module):
    """NB201's ResNet basic block between stages: 3x3 s2, 3x3, and a 2x2 avg-pool + 1x1 shortcut."""

    def __init__(self, cin, cout):
        super().__init__()
        self.a, self.b = _relu_conv_bn(cin, cout, 3, 2), _relu_conv_bn(cout, cout, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        return self.b(self.a(x)) + self.shortcut(x)


def nb201_network(arch: str) -> nn.Module:
    layers = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)]
    for i, c in enumerate((16, 32, 64)):
        if i:
            layers.append(_Nb201Reduction(c // 2, c))
        layers += [_Nb201Cell(arch, c) for _ in range(5)]
    return nn.Sequential(*layers, nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))


def fbnet_network(arch: str) -> nn.Module:
    """The FBNet macro as hwnas.tabular models it (module docstring)."""
    layers = [nn.Conv2d(3, 16, 3, padding=1, bias=False)]
    for op, (cin, cout, s, _) in zip(arch.split("-"), _fbnet_layout()):
        if op == "skip":
            if cin != cout or s != 1:
                layers.append(nn.Conv2d(cin, cout, 1, s, bias=False))
            continue
        k, e, g = (int(v or 1) for v in re.fullmatch(r"k(\d)_e(\d)(?:_g(\d))?", op).groups())
        hidden = cin * e
        layers += [nn.Conv2d(cin, hidden, 1, groups=g, bias=False),
                   nn.Conv2d(hidden, hidden, k, s, k // 2, groups=hidden, bias=False),
                   nn.Conv2d(hidden, cout, 1, groups=g, bias=False)]
    return nn.Sequential(*layers, nn.Conv2d(352, 1504, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(1504, 100))


def _as_array(c: Counts) -> np.ndarray:
    return np.array([c.macs, c.weight_values, c.activation_values])


def test_nb201_counts_equal_count_model_on_the_built_network(one_torch_thread):
    space = Nb201Space()
    genomes = [np.full(6, k) for k in range(len(NB201_OPS))] + list(space.space.sample(np.random.default_rng(0), 6))
    for g in genomes:
        arch = space.genome_to_arch(g)
        counted = count_model(nb201_network(arch), (3, 32, 32))
        np.testing.assert_allclose(space.counts(g)[0], _as_array(counted), rtol=1e-12, err_msg=arch)
    # A batch reads the weights once: Counts.batch scales the rest.
    g = genomes[-1]
    counted = count_model(nb201_network(space.genome_to_arch(g)), (3, 32, 32), batch_size=3)
    np.testing.assert_allclose(_as_array(Counts(*space.counts(g)[0]).batch(3)), _as_array(counted), rtol=1e-12)
    # The MAC count differs only by pooling: none of it in the all-none cell but the two 2x2 shortcut pools.
    none = np.zeros((1, 6), int)
    assert space.macs(none)[0] - space.counts(none)[0, 0] == 16 * 16 * 16 * 4 + 8 * 8 * 32 * 4
    with pytest.raises(HwnasError, match="out of bounds"):
        space.counts([[0, 0, 0, 0, 0, 5]])


def test_fbnet_counts_equal_count_model_and_macs(one_torch_thread):
    space = FbnetSpace()
    genomes = [np.full(22, j) for j in (0, 1, 7, 8)] + list(space.space.sample(np.random.default_rng(1), 3))
    for g in genomes:
        arch = space.genome_to_arch(g)
        counted = count_model(fbnet_network(arch), (3, 32, 32))
        np.testing.assert_allclose(space.counts(g)[0], _as_array(counted), rtol=1e-12, err_msg=arch)
    G = space.space.sample(np.random.default_rng(2), 200)
    np.testing.assert_array_equal(space.counts(G)[:, 0], space.macs(G))


def test_ofa_counts_equal_count_model_on_the_extracted_subnetwork(one_torch_thread):
    from hwnas import supernets
    from hwnas.supernets import config_from_arch_key

    net = supernets.create("ofa_mbv3_w1")
    space = OfaSpace()
    genomes = [space.space.smallest(), space.space.largest()] + list(space.space.sample(np.random.default_rng(0), 3))
    for g in genomes:
        config = config_from_arch_key(space.genome_to_arch(g))
        counted = count_model(net.extract(config), (3, config["r"], config["r"]))
        np.testing.assert_allclose(space.counts(g)[0], _as_array(counted), rtol=1e-12, err_msg=str(config))
    # Only the squeeze-excite rounding separates them from the MAC count (on 1x1 maps: tiny).
    G = np.stack(genomes)
    np.testing.assert_allclose(space.counts(G)[:, 0], space.macs(G), rtol=1e-3)


@pytest.mark.parametrize("name", ["fbnet", "ofa_mbv3"])
def test_typed_work_splits_the_block_work_by_block_type(name):
    """Per block type: blocks that run, then MACs, weights and activations (millions); summed over the
    types they are the network's work less its fixed layers."""
    from hwnas.tabular import space_from_spec

    t = space_from_spec({"name": name})
    G = t.space.sample(np.random.default_rng(1), 200)
    typed = t.typed_work(G)
    kinds = typed.shape[1] // 4
    assert typed.shape == (200, 36) and kinds == 9
    fixed = t.counts(G) - typed[:, kinds:].reshape(200, 3, kinds).sum(2) * 1e6
    assert np.allclose(fixed, fixed[0], rtol=1e-9, atol=1e-3) or name == "ofa_mbv3"  # OFA: fixed by resolution
    if name == "fbnet":
        np.testing.assert_array_equal(typed[:, :kinds], t.op_counts(G))
    else:
        np.testing.assert_array_equal(typed[:, :kinds].sum(1), t.op_counts(G)[:, :3].sum(1))
    assert space_from_spec({"name": "nb201"}).typed_work(G[:3, :6] % 5).shape == (3, 0)
