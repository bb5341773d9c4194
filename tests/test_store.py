"""The SQLite results store: every value kept with its source; nothing is stored twice."""

import sqlite3

import pytest

from hwnas.store import ResultsStore


def test_roundtrip_and_effective_value(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    cid = store.add_candidate("0-1-2", [0, 1, 2], {"d": 2, "ks": 3}, generation=1)
    assert store.add_candidate("0-1-2", [0, 1, 2], {"d": 2, "ks": 3}, generation=5) == cid  # same key, same row
    store.record(cid, {"accuracy": 0.8, "latency_ms": 3.0}, "predicted", 0.001)
    store.record(cid, {"accuracy": 0.75}, "measured", 1.5)
    store.close()

    (cand,) = ResultsStore(tmp_path / "r.sqlite").candidates()  # reopened from disk
    assert cand.genome == [0, 1, 2] and cand.config == {"d": 2, "ks": 3} and cand.generation == 1
    assert cand.value("accuracy") == 0.75 and cand.source("accuracy") == "measured"
    assert cand.value("latency_ms") == 3.0 and cand.source("latency_ms") == "predicted"
    assert cand.value("params") is None
    assert cand.wall_time_s == pytest.approx(1.501)


def test_a_second_measurement_of_the_same_value_is_refused(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    cid = store.add_candidate("k", [0], {}, 0)
    store.record(cid, {"accuracy": 0.5}, "measured", 1.0)
    with pytest.raises(sqlite3.IntegrityError):
        store.record(cid, {"accuracy": 0.6, "params": 3}, "measured", 1.0)
    # The failed write left nothing behind (one transaction).
    assert store.objective_rows() == 1


def test_meta_and_generations(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    store.set_meta("status", "running")
    store.add_candidate("a", [0], {}, 0)
    store.record_generation(0)
    store.record_generation(1)
    assert store.get_meta("status") == "running" and store.get_meta("missing", 7) == 7
    assert store.finished_generations() == [0, 1]
