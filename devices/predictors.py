"""Per-device cost predictors: ``cost_model(device, space).predict(genomes) -> {metric: array}``.

* Tabular spaces (``nb201``, ``fbnet``, ``ofa_mbv3``): the shipped meta-learned few-shot
  predictor (:mod:`hwnas.predictors.fewshot`) adapted to the device's samples, one
  adaptation per metric column the samples have (latency_ms, energy_mJ, power_W). Samples
  with power but no energy give energy = power x latency; samples with neither give the
  analytical estimate (:meth:`hwnas.tabular.TabularSpace.counts` through
  :mod:`hwnas.devices.energy`, at the profile's batch size and precision), labelled
  ``estimated``, and power = energy / predicted latency, labelled the same.
* Supernet spaces: the device's per-block lookup table (``hwnas devices measure``) summed
  over the sub-network's parts, calibrated by a linear fit on the whole sub-networks in
  the samples. A device with samples but no table falls back to the MAC count summed the
  same way (what a FLOPs proxy gives). Energy without measured energy samples is the
  analytical estimate of :mod:`hwnas.devices.energy` and is labelled ``estimated``;
  power is then energy / predicted latency, labelled the same.

``labels[metric]`` tells where each number comes from: ``fitted`` (a model fitted to
the device's measurements), ``derived`` (from other fitted metrics) or ``estimated``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Dict, List, Optional, Union

import numpy as np
from scipy.optimize import nnls
from scipy.stats import spearmanr, theilslopes

from hwnas.errors import HwnasError

from .energy import ESTIMATED, Counts, energy_mJ, power_W
from .registry import METRIC_COLUMNS, DeviceProfile, Samples, fit_samples, get_device
from .spaces import N_REFERENCES, DeviceSpace, SupernetDeviceSpace, TabularDeviceSpace, device_space

FITTED, DERIVED = "fitted", "derived"


class CostModel:
    """Predicts a device's cost metrics for genomes of one space."""

    def __init__(self, profile: DeviceProfile, dspace: DeviceSpace, samples: Optional[Samples]):
        self.profile, self.dspace, self.samples = profile, dspace, samples
        self.labels: Dict[str, str] = {}
        self.method = ""

    @property
    def device(self) -> str:
        return self.profile.name

    @property
    def space(self):
        """The :class:`hwnas.space.SearchSpace` whose genomes ``predict`` takes."""
        return self.dspace.space

    @property
    def metrics(self) -> List[str]:
        return list(self.labels)

    def predict(self, genomes) -> Dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_archs(self, archs: List[str]) -> Dict[str, np.ndarray]:
        return self.predict(np.stack([self.dspace.parse_arch(a) for a in archs]))

    def _refit(self, samples: Samples) -> "CostModel":  # pragma: no cover - abstract
        raise NotImplementedError

    def loo_spearman(self) -> Dict[str, float]:
        """Leave-one-out Spearman rho of each fitted metric on the device's samples."""
        s = self.samples
        if s is None or len(s) < 3:
            return {}
        preds = {m: np.empty(len(s)) for m in s.metrics}
        for i in range(len(s)):
            keep = np.arange(len(s)) != i
            rest = Samples(s.space, [a for j, a in enumerate(s.archs) if j != i], s.genomes[keep],
                           {m: v[keep] for m, v in s.values.items()})
            out = self._refit(rest).predict(s.genomes[i:i + 1])
            for m in preds:
                preds[m][i] = out[m][0]
        return {m: float(spearmanr(preds[m], s.values[m])[0]) for m in preds}


# --------------------------------------------------------------------------- tabular
# The knee of the soft floor, as a fraction of a metric's smallest sample. On the shipped tables the
# fastest architecture of a space is >= 0.59x the fastest of its 10 references on every device but one
# (pixel3 on NB201, whose near-empty cells take ~0 ms), so the floor leaves real predictions alone.
POSITIVE_KNEE = 0.5


def soft_floor(values: np.ndarray, knee: float) -> np.ndarray:
    """``values`` above ``knee`` unchanged; below it ``knee^2 / (2 knee - v)``: positive for every finite
    ``v``, strictly increasing, continuous with slope 1 at the knee. A linear few-shot model extrapolates
    below zero on near-empty cells; this keeps such predictions physical without reordering any."""
    values = np.asarray(values, dtype=float)
    below = values < knee
    out = values.copy()
    out[below] = knee * knee / (2.0 * knee - values[below])
    return out


@lru_cache(maxsize=None)
def _pretrained(space: str):
    from hwnas.predictors.fewshot import load_pretrained

    return load_pretrained(space)


class TabularCostModel(CostModel):
    def __init__(self, profile: DeviceProfile, dspace: TabularDeviceSpace, samples: Samples):
        super().__init__(profile, dspace, samples)
        base = _pretrained(dspace.name)
        self.method = "few-shot (meta-learned, adapted to the samples)"
        self.adapted = {m: base.adapt(samples.values[m], samples.genomes) for m in samples.metrics}
        labels = {m: FITTED for m in samples.metrics}
        if "energy_mJ" in labels:
            labels.setdefault("power_W", DERIVED)
        elif "power_W" in labels:
            labels["energy_mJ"] = DERIVED  # power x latency: measured power beats the estimate
        else:
            labels.update(energy_mJ=ESTIMATED, power_W=ESTIMATED)
        self.labels = {m: labels[m] for m in METRIC_COLUMNS}
        # Latency predicted below the device's fastest sample is extrapolation (on NB201's near-empty
        # cells the few-shot model even goes below zero): power and energy derived from it use this floor.
        self.latency_floor = float(samples.values["latency_ms"].min())
        # Below half the smallest sample of a fitted metric, predictions are squeezed smoothly towards 0
        # (soft_floor): positive, in the same order (rank unchanged), untouched above the knee.
        self.knees = {m: POSITIVE_KNEE * float(samples.values[m].min()) for m in samples.metrics}

    def _refit(self, samples: Samples) -> "TabularCostModel":
        return TabularCostModel(self.profile, self.dspace, samples)

    def advice(self, extra: int = 10) -> Dict[str, float]:
        """The latency model's own expected Spearman rho over the space now and after ``extra`` more
        samples chosen to reduce its uncertainty (``hwnas devices refs --device``)."""
        model = self.adapted["latency_ms"]
        return {"now": model.expected_rho(), "more": model.expected_rho(extra), "extra": extra,
                "resemblance": getattr(model, "resemblance_", 1.0), "weights": dict(model.weights_)}

    def suggest(self, n: int) -> np.ndarray:
        """``n`` architectures not among the samples that most reduce the latency model's uncertainty."""
        return self.adapted["latency_ms"].suggest(n, measured=self.samples.genomes)

    def extrapolated(self, genomes) -> Dict[str, np.ndarray]:
        """Per fitted metric, where the raw prediction fell below the knee (softly floored there)."""
        return {m: model.predict(genomes) < self.knees[m] for m, model in self.adapted.items()}

    def estimated_energy(self, genomes) -> np.ndarray:
        """Analytical energy (mJ) of one forward pass at the profile's batch size and precision."""
        per_image = Counts(*self.dspace.tspace.counts(genomes).T)
        return energy_mJ(per_image.batch(self.profile.spec.batch_size), self.profile.spec.precision)

    def predict(self, genomes) -> Dict[str, np.ndarray]:
        out = {m: soft_floor(model.predict(genomes), self.knees[m]) for m, model in self.adapted.items()}
        latency = np.maximum(out["latency_ms"], self.latency_floor)
        if self.labels["energy_mJ"] == ESTIMATED:
            out["energy_mJ"] = self.estimated_energy(genomes)
        elif self.labels["energy_mJ"] == DERIVED:
            out["energy_mJ"] = out["power_W"] * latency
        if self.labels["power_W"] != FITTED:
            out["power_W"] = power_W(out["energy_mJ"], latency)
        return {m: out[m] for m in self.labels}


# --------------------------------------------------------------------------- supernet
# A coefficient per stage needs several samples each; below that, one scale and offset.
STAGE_FIT_SAMPLES_PER_COEF = 5


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple:
    """y ~ a x + b, robustly (Theil-Sen: median of pairwise slopes), since a few of a handful of
    timings on a shared machine can be far off; a proportional fit if the slope is not positive."""
    if len(x) >= 3 and np.ptp(x) > 0:
        a, b = theilslopes(y, x)[:2]
        if a > 0:
            return float(a), float(b)
    return float(np.median(y / x)), 0.0


class SupernetCostModel(CostModel):
    """A summed lookup table (or MAC counts) calibrated on whole sub-networks of the device."""

    def __init__(self, profile: DeviceProfile, dspace: SupernetDeviceSpace, samples: Optional[Samples]):
        from .lut import count_table, energy_table, macs_table, read_lut

        super().__init__(profile, dspace, samples)
        lut_file = profile.file("lut", dspace.name, "json")
        if lut_file.is_file():
            counts, timing = read_lut(lut_file, dspace)
            self.table = {key: entry["latency_ms"] for key, entry in counts.items()}
            self.method = f"per-block lookup table (parts timed {timing})"
        elif samples is not None:
            counts = count_table(dspace.name)
            self.table, self.method = macs_table(counts), "MAC count (no lookup table measured)"
        else:
            raise HwnasError(f"device {profile.name!r} has neither samples nor a lookup table for {dspace.name}; "
                             f"run 'hwnas devices measure {profile.name} --space {dspace.name} --backend torch-cpu'")
        self.energy = energy_table(counts, profile.spec.batch_size, profile.spec.precision)
        self.latency_coef = None  # per-stage coefficients (stem+head, stages..., constant), else a * sum + b
        self.latency_scale = 1.0  # the machine's drift since the profile was measured (re-anchoring)
        self.latency_fit = (1.0, 0.0)
        self.energy_fit = (1.0, 0.0)
        # A line fitted on a handful of sub-networks can cross zero below the smallest of them; the
        # floor extrapolates there in proportion to the table sum instead (the least cost per unit seen).
        self.latency_floor = self.energy_floor = 0.0
        if samples is not None:
            X = self._stages(self.table, samples.genomes)
            if len(samples) >= STAGE_FIT_SAMPLES_PER_COEF * X.shape[1]:
                self.method += f", calibrated per stage on {len(samples)} whole sub-networks"
                self.latency_coef = nnls(X, samples.values["latency_ms"])[0]
            else:
                self.method += f", calibrated on {len(samples)} whole sub-networks"
                sums = X[:, :-1].sum(1)
                self.latency_fit = _linear_fit(sums, samples.values["latency_ms"])
                self.latency_floor = float(np.min(samples.values["latency_ms"] / sums))
            if "energy_mJ" in samples.values:
                sums = self._sum(self.energy, samples.genomes)
                self.energy_fit = _linear_fit(sums, samples.values["energy_mJ"])
                self.energy_floor = float(np.min(samples.values["energy_mJ"] / sums))
        measured_energy = samples is not None and "energy_mJ" in samples.values
        self.labels = {"latency_ms": FITTED, "energy_mJ": FITTED if measured_energy else ESTIMATED,
                       "power_W": DERIVED if measured_energy else ESTIMATED}

    def _stages(self, table, genomes) -> np.ndarray:
        from .lut import stage_sums

        sums = stage_sums(self.dspace, table, genomes)
        return np.hstack([sums, np.ones((len(sums), 1))])

    def _sum(self, table, genomes) -> np.ndarray:
        from .lut import sum_parts

        return sum_parts(self.dspace, table, genomes)

    def _refit(self, samples: Samples) -> "SupernetCostModel":
        return SupernetCostModel(self.profile, self.dspace, samples)

    def reference_items(self):
        """The space's reference sub-networks as models to re-time, their latency in the profile, the backend."""
        dspace = self.dspace
        then = dict(zip(self.samples.archs, self.samples.values["latency_ms"]))
        archs = dspace.reference_archs()
        models = [dspace.supernet.extract(dspace.space.decode(dspace.parse_arch(a))) for a in archs]
        return models, np.array([then[a] for a in archs]), self.profile.spec.backend

    def predict(self, genomes) -> Dict[str, np.ndarray]:
        if self.latency_coef is not None:
            latency = self._stages(self.table, genomes) @ self.latency_coef
        else:
            a, b = self.latency_fit
            sums = self._sum(self.table, genomes)
            latency = np.maximum(a * sums + b, self.latency_floor * sums)
        latency = latency * self.latency_scale
        a, b = self.energy_fit
        sums = self._sum(self.energy, genomes)
        energy = np.maximum(a * sums + b, self.energy_floor * sums)
        return {"latency_ms": latency, "energy_mJ": energy, "power_W": energy / latency}


class CompressedCostModel(CostModel):
    """Latency of compressed candidates (a joint space's genomes) from the profile's compressed table.

    Each candidate's units are looked up by architecture choice, keep ratio and precision
    (:func:`hwnas.devices.lut.compressed_unit_keys`), summed per stage separately for fp32 and int8
    units, and calibrated on the whole compressed sub-networks the table file holds: one non-negative
    coefficient per (stem + head or stage) x precision plus a constant (NNLS), so what parts timed alone
    miss (int8 Quantize/Dequantize at part borders, cache state) is fitted per precision. Energy is
    the count of each candidate's own layers (:class:`hwnas.devices.energy.CandidateEnergy`,
    ``estimated``), power = energy / predicted latency.
    """

    def __init__(self, profile: DeviceProfile, dspace: SupernetDeviceSpace, joint):
        from .energy import CandidateEnergy
        from .lut import COMPRESSED, compressed_columns, read_compressed

        super().__init__(profile, dspace, None)
        self.joint = joint
        self.path = profile.file(COMPRESSED, dspace.name, "json")
        doc = read_compressed(self.path, dspace)
        self.document = doc
        self.table = {key: entry["latency_ms"] for key, entry in doc["entries"].items()}
        self.configs = [row["config"] for row in doc["samples"]]
        self.measured = np.array([row["latency_ms"] for row in doc["samples"]])
        self.latency_coef = nnls(compressed_columns(dspace, self.table, self.configs), self.measured)[0]
        self.latency_scale = 1.0
        self.energy = CandidateEnergy(joint.supernet, joint.space, dspace.input_shape, profile.spec.batch_size,
                                      profile.spec.precision)
        self.method = (f"compressed lookup table ({len(self.table)} parts timed alone), calibrated per stage and "
                       f"precision on {len(self.configs)} whole compressed sub-networks")
        self.labels = {"latency_ms": FITTED, "energy_mJ": ESTIMATED, "power_W": ESTIMATED}

    @property
    def space(self):
        return self.joint.space

    def latency(self, configs) -> np.ndarray:
        """Predicted latency (ms) of flat joint configs, before re-anchoring."""
        from .lut import compressed_columns

        return compressed_columns(self.dspace, self.table, configs) @ self.latency_coef

    def reference_items(self):
        """The first 10 calibration sub-networks as models to re-time, and their latency in the profile."""
        from .measure import compressed_models

        configs = self.configs[:N_REFERENCES]
        return compressed_models(self.dspace, configs), self.measured[:N_REFERENCES], self.document["backend"]["name"]

    def predict(self, genomes) -> Dict[str, np.ndarray]:
        G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
        latency = self.latency([self.joint.space.decode(g) for g in G]) * self.latency_scale
        energy = self.energy.predict(G)
        return {"latency_ms": latency, "energy_mJ": energy, "power_W": power_W(energy, latency)}


class TranslatedCostModel(CostModel):
    """A tabular space's cost model serving a supernet whose architectures it spells the same way.

    The ``ofa_mbv3_w1`` supernet and the ``ofa_mbv3`` table both use once-for-all's
    ``ks=...;e=...;d=...;r=...`` keys, so a device with ``ofa_mbv3`` samples (every shipped
    OFA device) predicts the supernet's sub-networks with the meta-learned few-shot model.
    """

    def __init__(self, profile: DeviceProfile, dspace: SupernetDeviceSpace, tabular: TabularCostModel):
        super().__init__(profile, dspace, tabular.samples)
        self.tabular, self.labels = tabular, tabular.labels
        self.method = f"{tabular.method}, on the {tabular.dspace.name} table's architecture keys"

    def _refit(self, samples: Samples) -> "TranslatedCostModel":
        return TranslatedCostModel(self.profile, self.dspace, self.tabular._refit(samples))

    def predict(self, genomes) -> Dict[str, np.ndarray]:
        G = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
        keys = [self.dspace.format_arch(g) for g in G]
        return self.tabular.predict(np.stack([self.tabular.dspace.parse_arch(k) for k in keys]))


# Supernets whose architecture keys are those of a tabular space.
SAME_KEYS_AS = {"ofa_mbv3_w1": "ofa_mbv3"}


def cost_model(device: Union[str, DeviceProfile], space: str, home: Optional[os.PathLike] = None,
               joint=None) -> CostModel:
    """The cost predictor of ``device`` (a name in the registry, or a profile) on ``space``.

    ``joint``: a :class:`hwnas.dimensions.JointSpace` searched with compression dimensions; its
    genomes are then predicted from the profile's compressed table (:class:`CompressedCostModel`).
    """
    profile = device if isinstance(device, DeviceProfile) else get_device(device, home)
    dspace = device_space(space)
    if joint is not None and joint.parts:
        return compressed_cost_model(profile, dspace, joint)
    samples = profile.samples(dspace.name) if (profile.has_space(dspace.name) or dspace.kind == "tabular") else None
    samples = fit_samples(samples) if samples is not None else None  # bounded cost for any number of rows
    if isinstance(dspace, TabularDeviceSpace):
        return TabularCostModel(profile, dspace, samples)
    table = SAME_KEYS_AS.get(dspace.supernet.registry_name)
    if samples is None and table is not None and profile.has_space(table) \
            and not profile.file("lut", dspace.name, "json").is_file():
        tabular = device_space(table)
        return TranslatedCostModel(profile, dspace, TabularCostModel(profile, tabular, profile.samples(table)))
    return SupernetCostModel(profile, dspace, samples)


def compressed_cost_model(profile: DeviceProfile, dspace: DeviceSpace, joint) -> CompressedCostModel:
    """The compressed table's cost model, or why there is none (one line naming the command that makes one)."""
    options = {d.name: d.options.model_dump() for d in joint.dimensions}
    problem = compressed_table_problem(profile, dspace.name, options)
    if problem is not None:
        raise HwnasError(problem)
    return CompressedCostModel(profile, dspace, joint)


def compressed_table_problem(profile: DeviceProfile, space: str, options: Dict[str, dict],
                             experiment: Optional[os.PathLike] = None) -> Optional[str]:
    """Why ``profile`` cannot predict compressed candidates of ``space`` searched with ``options``
    (compression dimension -> choices); None: its compressed table covers them. The reason names the
    command that measures one (``--experiment`` with the experiment file when given)."""
    from .lut import COMPRESSED, normalized_options, read_compressed, uncovered

    dspace = device_space(space)
    dims = [d for d in options if d != "architecture"]
    choices = f"--experiment {experiment}" if experiment is not None else f"--dimensions {','.join(dims)}"
    command = f"'hwnas devices measure {profile.name} --space {space} --backend onnxruntime-cpu {choices}'"
    if not isinstance(dspace, SupernetDeviceSpace):
        return f"{space} is a benchmark table: it holds architectures only"
    path = profile.file(COMPRESSED, space, "json")
    if not path.is_file():
        return (f"device {profile.name!r} has no lookup table of compressed parts for {space} (its cost model knows "
                f"architectures only, not {' or '.join(dims)}); make one with {command}")
    gap = uncovered(read_compressed(path, dspace), normalized_options(dims, options))
    if gap is not None:
        return (f"device {profile.name!r}'s compressed lookup table for {space} does not cover the search ({gap}); "
                f"re-measure with {command}")
    return None
