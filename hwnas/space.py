"""Search spaces: named discrete variables; a genome is an int vector of choice indices.

Supernet-backed spaces and tabular benchmark spaces answer to the same contract, so
every strategy runs on both. A joint space (architecture x pruning x quantization) is
the product of its parts (:meth:`SearchSpace.product`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Choice:
    """One searchable variable: a name and its ordered allowed values."""

    name: str
    options: Tuple[Any, ...]

    def __post_init__(self):
        if len(self.options) < 1:
            raise ValueError(f"variable {self.name!r} has no options")


class SearchSpace:
    """A product of :class:`Choice` variables.

    ``decode(genome)`` gives a flat config ``{name: value}``; ``encode`` inverts it;
    ``features`` maps genomes to a float matrix for predictors (each variable's value
    scaled to [0, 1] when the options are numbers, one-hot otherwise).
    """

    def __init__(self, variables: Sequence[Choice], name: str = "space"):
        names = [v.name for v in variables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variable names in space {name!r}")
        self.name = name
        self.variables: List[Choice] = list(variables)
        self._index = {v.name: i for i, v in enumerate(self.variables)}

    # --- shape -----------------------------------------------------------------
    @property
    def n_var(self) -> int:
        return len(self.variables)

    @property
    def upper(self) -> np.ndarray:
        """Inclusive upper bound of each gene (lower bound is 0)."""
        return np.array([len(v.options) - 1 for v in self.variables], dtype=int)

    @property
    def size(self) -> int:
        return int(np.prod([len(v.options) for v in self.variables], dtype=float))

    # --- genome <-> config --------------------------------------------------------
    def decode(self, genome: Sequence[int]) -> Dict[str, Any]:
        g = self._check(genome)
        return {v.name: v.options[int(i)] for v, i in zip(self.variables, g)}

    def encode(self, config: Dict[str, Any]) -> np.ndarray:
        missing = [v.name for v in self.variables if v.name not in config]
        if missing:
            raise ValueError(f"config lacks {', '.join(missing)}")
        out = []
        for v in self.variables:
            try:
                out.append(v.options.index(config[v.name]))
            except ValueError:
                raise ValueError(
                    f"{v.name}={config[v.name]!r} is not one of {list(v.options)}"
                ) from None
        return np.array(out, dtype=int)

    def key(self, genome: Sequence[int]) -> str:
        """A stable identity string for a genome (the store's unique key)."""
        return "-".join(str(int(i)) for i in self._check(genome))

    def from_key(self, key: str) -> np.ndarray:
        return self._check([int(t) for t in key.split("-")])

    # --- sampling and features ----------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        return np.stack([rng.integers(0, u + 1, size=n) for u in self.upper], axis=1)

    def smallest(self) -> np.ndarray:
        return np.zeros(self.n_var, dtype=int)

    def largest(self) -> np.ndarray:
        return self.upper.copy()

    def ends(self) -> List[np.ndarray]:
        """Genomes a search measures first because predictors extrapolate badly beyond them: the
        smallest and the largest (a joint space adds its uniform compressions,
        :meth:`hwnas.dimensions.JointSpace.ends`)."""
        return [self.smallest(), self.largest()]

    def features(self, genomes: Iterable[Sequence[int]]) -> np.ndarray:
        G = np.atleast_2d(np.asarray(list(genomes) if not isinstance(genomes, np.ndarray) else genomes, dtype=int))
        cols = []
        for j, v in enumerate(self.variables):
            if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in v.options):
                vals = np.asarray(v.options, dtype=float)
                span = vals.max() - vals.min()
                cols.append(((vals[G[:, j]] - vals.min()) / (span if span else 1.0))[:, None])
            else:
                cols.append(np.eye(len(v.options))[G[:, j]])
        return np.concatenate(cols, axis=1)

    def product(self, other: "SearchSpace", name: str | None = None) -> "SearchSpace":
        return SearchSpace(self.variables + other.variables, name or f"{self.name}x{other.name}")

    # --- helpers ----------------------------------------------------------------------
    def _check(self, genome: Sequence[int]) -> np.ndarray:
        g = np.asarray(genome, dtype=int).reshape(-1)
        if g.shape[0] != self.n_var:
            raise ValueError(f"genome has {g.shape[0]} genes, space {self.name!r} has {self.n_var}")
        if (g < 0).any() or (g > self.upper).any():
            raise ValueError(f"genome {g.tolist()} is out of bounds for space {self.name!r}")
        return g

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, n_var={self.n_var}, size={self.size})"
