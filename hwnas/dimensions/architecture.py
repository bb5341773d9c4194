"""The architecture dimension: the supernet's own elastic variables (kernel, expand, depth, width, resolution).

Its transform is the supernet's ``extract`` (every dimension's transforms act on what it
extracts); its features are :func:`hwnas.predictors.features.predictor_features` of the
supernet's space; its readable column is the run's ``arch`` string.
"""

from __future__ import annotations

from typing import List

from hwnas.space import Choice

from . import DIMENSIONS, Dimension


@DIMENSIONS.register("architecture")
class Architecture(Dimension):
    name = "architecture"
    prefix = ""

    def variables(self, supernet) -> List[Choice]:
        return list(supernet.space.variables)
