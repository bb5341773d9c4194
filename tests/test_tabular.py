"""Tabular benchmark spaces: parsing round-trips, lookup, features, MACs and input errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.tabular import (
    FbnetSpace,
    Nb201Space,
    OfaSpace,
    TabularBenchmark,
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
