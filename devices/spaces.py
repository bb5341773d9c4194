"""The spaces a device profile can hold samples for, behind one small interface.

* tabular spaces ``nb201``, ``fbnet``, ``ofa_mbv3``: architectures are the tables'
  ``arch_str`` / ``arch_key`` strings (:mod:`hwnas.tabular`);
* supernet spaces: a registered supernet name (its shipped default checkpoint, or a fresh
  instance while none is shipped - latency does not depend on the weights) or
  ``NAME:PATH`` for another checkpoint; architectures are ``ks=...;e=...;d=...;r=...``
  keys (:func:`hwnas.supernets.arch_key`) or a config JSON object.

Each space names its 10 reference architectures, the ones a user measures to add a device.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from hwnas.errors import HwnasError
from hwnas.space import SearchSpace
from hwnas.tabular import TABLE_FILES, TabularBenchmark, TabularSpace, space_from_spec

REFERENCE_DIR = Path(__file__).resolve().parent / "profiles" / "_references"
N_REFERENCES = 10


class DeviceSpace:
    """Architectures of one space as strings <-> genomes, and its reference architectures."""

    name: str  # the spec the user wrote, e.g. "nb201" or "elastic_mbv3:ckpt.pt"
    kind: str  # "tabular" | "supernet"
    arch_help: str
    space: SearchSpace

    def parse_arch(self, text: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def format_arch(self, genome: Sequence[int]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def reference_archs(self) -> List[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def slug(self) -> str:
        """File-name-safe identity (``samples-<slug>.csv``)."""
        return space_slug(self.name)


def space_slug(spec: str) -> str:
    name, _, path = spec.partition(":")
    if not path:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    from hwnas.supernets import checkpoint_path

    digest = hashlib.sha1(str(checkpoint_path(path).resolve()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}"


class TabularDeviceSpace(DeviceSpace):
    kind = "tabular"

    def __init__(self, name: str):
        self.name = name
        self.tspace: TabularSpace = space_from_spec({"name": name})
        self.space = self.tspace.space
        self.arch_help = f"an {self.tspace.arch_column} string of {name}"

    def parse_arch(self, text: str) -> np.ndarray:
        return self.tspace.arch_to_genome(text)

    def format_arch(self, genome: Sequence[int]) -> str:
        return self.tspace.genome_to_arch(genome)

    def reference_archs(self) -> List[str]:
        """HELP's 10 reference architectures: from the shipped list, else from the shared table."""
        path = REFERENCE_DIR / f"{self.name}.csv"
        if path.is_file():
            with open(path, newline="") as f:
                return [row["arch"] for row in csv.DictReader(f)]
        try:
            bench = TabularBenchmark.load(self.name)
        except HwnasError as err:
            raise HwnasError(f"reference architectures of {self.name} unknown: no {path.name} shipped and {err}") \
                from None
        return [bench.genome_to_arch(g) for g in bench.reference_genomes()]


class SupernetDeviceSpace(DeviceSpace):
    kind = "supernet"

    def __init__(self, spec: str):
        from hwnas import supernets

        self.name = spec
        name, _, path = spec.partition(":")
        if name not in supernets.SUPERNETS:
            raise HwnasError(f"unknown space {spec!r}; known: {', '.join(known_spaces())} "
                             "(supernet spaces also as NAME:CHECKPOINT)")
        self.supernet_name, self.checkpoint = name, path or None
        self.arch_help = "a 'ks=..;e=..;d=..;r=..' arch key or a config JSON object"
        self._supernet = None
        self.space = self.supernet.space

    @property
    def supernet(self):
        if self._supernet is None:
            from hwnas import supernets

            if self.checkpoint:
                self._supernet = supernets.load_checkpoint(supernets.checkpoint_path(self.checkpoint))
            elif self.supernet_name == supernets.DEFAULT_SUPERNET and supernets.DEFAULT_CHECKPOINT.is_file():
                self._supernet = supernets.load_checkpoint(supernets.DEFAULT_CHECKPOINT)
            else:
                self._supernet = supernets.create(self.supernet_name)
            if self._supernet.registry_name != self.supernet_name:
                raise HwnasError(f"checkpoint {self.checkpoint} holds supernet {self._supernet.registry_name!r}, "
                                 f"not {self.supernet_name!r}")
        return self._supernet

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """One input image: the supernet's channels at its largest resolution (it resizes down)."""
        kw = self.supernet.init_kwargs
        r = max(kw["resolutions"])
        return (kw["in_chans"], r, r)

    def config(self, genome: Sequence[int]) -> dict:
        return self.space.decode(genome)

    def parse_arch(self, text: str) -> np.ndarray:
        from hwnas.supernets import config_from_arch_key

        text = text.strip() if isinstance(text, str) else ""
        if text.startswith("{"):
            try:
                config = json.loads(text)
            except json.JSONDecodeError as err:
                raise HwnasError(f"invalid config JSON: {err}") from None
            if not isinstance(config, dict):
                raise HwnasError("config JSON must be an object")
        else:
            config = config_from_arch_key(text)
        try:
            return self.space.encode(config)
        except ValueError as err:
            raise HwnasError(f"not an architecture of {self.supernet_name}: {err}") from None

    def format_arch(self, genome: Sequence[int]) -> str:
        from hwnas.supernets import arch_key

        return arch_key(self.space.decode(genome))

    def reference_archs(self) -> List[str]:
        """Smallest, largest, and 8 seeded random sub-networks (deterministic for a space)."""
        rng = np.random.default_rng(0)
        genomes = [self.space.smallest(), self.space.largest()]
        seen = {self.space.key(g) for g in genomes}
        while len(genomes) < N_REFERENCES:
            g = self.space.sample(rng)[0]
            if self.space.key(g) not in seen:
                seen.add(self.space.key(g))
                genomes.append(g)
        return [self.format_arch(g) for g in genomes]


def known_spaces() -> List[str]:
    from hwnas import supernets

    return list(TABLE_FILES) + supernets.names()


def device_space(spec: str) -> DeviceSpace:
    """``nb201`` / ``fbnet`` / ``ofa_mbv3`` / a supernet name / ``NAME:CHECKPOINT``."""
    if not isinstance(spec, str) or not spec.strip():
        raise HwnasError(f"space must be one of {', '.join(known_spaces())}")
    spec = spec.strip()
    if spec in TABLE_FILES:
        return _tabular(spec)
    return _supernet(spec)


@lru_cache(maxsize=None)
def _tabular(name: str) -> TabularDeviceSpace:
    return TabularDeviceSpace(name)


@lru_cache(maxsize=8)
def _supernet(spec: str) -> SupernetDeviceSpace:
    return SupernetDeviceSpace(spec)
