import numpy as np
import pytest

from hwnas.space import Choice, SearchSpace


def make():
    return SearchSpace([Choice("ks", (3, 5, 7)), Choice("op", ("conv", "pool")), Choice("d", (2, 3, 4))], "toy")


def test_decode_encode_key_roundtrip():
    space = make()
    rng = np.random.default_rng(0)
    for g in space.sample(rng, 50):
        config = space.decode(g)
        assert (space.encode(config) == g).all()
        assert (space.from_key(space.key(g)) == g).all()
    assert space.size == 18 and space.n_var == 3
    assert space.decode(space.largest()) == {"ks": 7, "op": "pool", "d": 4}


def test_features_scale_numbers_and_one_hot_names():
    space = make()
    X = space.features(np.array([[0, 0, 0], [2, 1, 2]]))
    assert X.tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 1.0]]


def test_bad_genomes_and_configs():
    space = make()
    with pytest.raises(ValueError, match="out of bounds"):
        space.decode([3, 0, 0])
    with pytest.raises(ValueError, match="genes"):
        space.decode([0, 0])
    with pytest.raises(ValueError, match="not one of"):
        space.encode({"ks": 9, "op": "conv", "d": 2})


def test_product():
    joint = make().product(SearchSpace([Choice("bits", (8, 32))], "q"))
    assert joint.n_var == 4 and joint.size == 36
