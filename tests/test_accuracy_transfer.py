"""TransferAccuracyPredictor: the scikit-learn contract, on the measured compressed sub-networks of the benchmark."""

import sys

import numpy as np
import pytest
from scipy.stats import kendalltau

from conftest import ROOT
from hwnas.predictors import AccuracyPredictor, TransferAccuracyPredictor
from hwnas.predictors.features import predictor_features

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_transfer_beats_the_fp32_predictor_on_measured_compressed_configs():
    import accuracy_transfer as at

    net, js = at.joint_space()
    sets = at.load(js)
    G_fp, y_fp = sets["fp32"][:2]
    G_tr, y_tr = sets["train"][:2]
    G_te, y_te = sets["test"][:2]
    base = AccuracyPredictor(models=("ridge",)).fit(predictor_features(net.space)(G_fp[:, js.arch_slice]), y_fp)
    F_tr, F_te = js.features(G_tr), js.features(G_te)
    model = TransferAccuracyPredictor(base=base)
    assert model.fit(F_tr, y_tr) is model
    k = base.n_features_in_
    assert kendalltau(model.predict(F_te), y_te).statistic > kendalltau(base.predict(F_te[:, :k]), y_te).statistic
    with pytest.raises(ValueError, match="needs base="):
        TransferAccuracyPredictor().fit(F_tr, y_tr)
    with pytest.raises(ValueError, match="no compression features"):
        TransferAccuracyPredictor(base=base).fit(F_tr[:, :k], y_tr)
