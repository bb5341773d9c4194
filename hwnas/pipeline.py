"""The experiment pipeline: config -> space -> evaluators -> strategy -> store -> report.

A run lives in one folder: ``config.yaml`` (the file as given), ``results.sqlite`` (every
evaluated candidate) and the views written at the end. ``resume`` replays the seeded
search; every candidate already stored is answered from the store, never re-evaluated.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .config import TABLE_ACCURACY, DeviceConfig, ExperimentConfig, data_spec, device_locations, device_space_name
from .errors import HwnasError
from .evaluation import Metric, SupernetMeasureTask, budget_slack, experiment_metrics, objective_matrix
from .executors import create_executor
from .rundir import DEFAULT_BACKEND_META, OLD_DEFAULT_BACKEND  # noqa: F401
from .rundir import CONFIG_NAME, STORE_NAME, default_run_dir, plan_run_dir, resume_run_dir, start_run_dir  # noqa: F401
from .store import Candidate, ResultsStore

# Re-measuring a front whose predictions were optimistic can pull in new members; cap the rounds.
MAX_FRONT_ROUNDS = 20
WARM_GENERATION = -2  # candidates copied from strategy.warm_start's run


@dataclass
class RunSummary:
    run_dir: Path
    n_candidates: int
    n_front: int
    wall_time_s: float
    front: List[Candidate]


class Experiment:
    """One search run in ``run_dir``; built by :func:`start_run` or :func:`resume_run`."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, progress=None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.store = ResultsStore(self.run_dir / STORE_NAME)
        try:  # before anything is loaded or changed: a resume on other weights stops here
            self._record_provenance()
        except HwnasError:
            self.store.close()
            raise
        self.locations = device_locations(cfg)  # device -> here (measured in this run) or external
        self.metrics: List[Metric] = experiment_metrics(cfg, self.locations)
        self.space_backend = create_space_backend(cfg, self.metrics)
        self.space = self.space_backend.space
        self.predictors: Dict[str, object] = {}
        self._cost_models: Dict[str, object] = {}  # device name -> its cost model on this space
        self._counted_energy: Dict[str, object] = {}  # metric key -> CandidateEnergy (no profile can say)
        self.progress = progress
        self.on_total: Optional[Callable[[int], None]] = None  # told when the expected evaluations grow
        # Every stored candidate, read once (a resume starts from them) and kept current in memory,
        # so a generation's evaluation does not re-read the whole store.
        self._candidates: Dict[str, Candidate] = self.store.by_key()
        # A finished run continued for more generations ('hwnas resume --generations') stores the new total.
        self.generations = int(self.store.get_meta("generations", cfg.strategy.generations))

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, genomes: np.ndarray, generation: int, sources: Optional[Dict[str, str]] = None):
        """Make sure every genome has a value for every metric; return (F, G) for pymoo.

        ``sources`` overrides how each metric is obtained (the front re-measurement asks
        for ``measured`` everywhere). Stored values are reused, never recomputed.
        """
        sources = sources or {m.key: m.source for m in self.metrics}
        genomes = self.space_backend.canonical(np.asarray(genomes, dtype=int))
        stored = self._candidates
        to_measure, to_predict = [], []
        unique = {self.space.key(g): g for g in genomes}  # a batch may repeat a genome
        for key, genome in unique.items():
            cand = stored.get(key)
            if cand is None:
                config = self.space_backend.decode(genome)
                cid = self.store.add_candidate(key, genome, config, generation)
                cand = stored[key] = Candidate(cid, key, [int(g) for g in genome], config, generation)
            have = set(cand.measured) | set(cand.predicted)
            missing_measured = [k for k, s in sources.items() if s == "measured" and k not in cand.measured]
            missing_predicted = [k for k, s in sources.items() if s == "predicted" and k not in have]
            if missing_measured:
                to_measure.append((cand, missing_measured))
            if missing_predicted:
                to_predict.append((cand, missing_predicted))
        measured_keys = {c.key for c, _ in to_measure}
        if to_measure:
            requests = [(c.config, keys) for c, keys in to_measure]
            for (cand, _), (values, seconds) in zip(to_measure, self.space_backend.measure(requests)):
                self._check_costs({cand.id: values}, "measured")
                self.store.record(cand.id, values, "measured", seconds)
                cand.measured.update(values)
                self._advance(1)
        if to_predict:
            self._predict(to_predict)
        self._advance(len(set(unique) - measured_keys))
        rows = [self._search_values(stored[self.space.key(g)]) for g in genomes]
        return objective_matrix(rows, self.metrics), budget_slack(rows, self.cfg)

    def _search_values(self, cand: Candidate) -> Dict[str, float]:
        """What the strategy sees: a predicted metric as predicted, even once the front measured it.

        So a resumed or continued run replays exactly what an uninterrupted one saw (the front is
        measured only at the end); the front itself uses effective values.
        """
        return {m.key: cand.predicted[m.key] if m.source == "predicted" and m.key in cand.predicted
                else cand.value(m.key) for m in self.metrics}

    def _predict(self, items):
        """Predict missing values in one vectorised call per metric; store them per candidate."""
        start = time.perf_counter()
        values: Dict[int, Dict[str, float]] = {}
        for key in {k for _, keys in items for k in keys}:
            cands = [c for c, keys in items if key in keys]
            for cand, value in zip(cands, self._predictor(key)(np.array([c.genome for c in cands]))):
                values.setdefault(cand.id, {})[key] = float(value)
        seconds = (time.perf_counter() - start) / len(items)
        self._check_costs(values, "predicted")
        for cand, _ in items:
            self.store.record(cand.id, values[cand.id], "predicted", seconds)
            cand.predicted.update(values[cand.id])

    def _check_costs(self, values: Dict[int, Dict[str, float]], source: str) -> None:
        """A latency or energy is positive and a power finite; anything else is refused, never stored."""
        metrics = {m.key: m for m in self.metrics}
        for cid, row in values.items():
            for key, v in row.items():
                m = metrics[key]
                # (+inf: a table's missing value, which never reaches the front)
                ok = v > 0 and (np.isfinite(v) or (source == "measured" and v == np.inf))
                if m.metric in ("latency_ms", "energy_mJ", "power_W") and not ok:
                    where = (f"{m.device}'s cost model" if source == "predicted" and self._cost_models.get(m.device)
                             else f"the {source} value")
                    raise HwnasError(f"candidate {cid}: {where} gave {key} = {v:g}, which is not a physical "
                                     f"{m.metric} (must be finite and > 0); nothing of it was stored")

    def _predictor(self, key: str):
        """``genomes -> values`` for a predicted metric.

        A cost metric of a device with a profile uses the device's cost model (few-shot
        adapted or lookup table: no measuring needed); anything else a predictor fitted
        on the run's initial measured candidates (deterministic, so a resume predicts alike).
        """
        if key not in self.predictors:
            metric = next(m for m in self.metrics if m.key == key)
            counted = self._candidate_energy(metric)
            model = self._device_cost_model(metric) if counted is None else None
            if counted is not None:
                self.predictors[key] = counted.predict
            elif model is not None:
                self.predictors[key] = lambda G, model=model, name=metric.metric: model.predict(G)[name]
            else:
                self.predictors[key] = self._fitted_predictor(key)
        return self.predictors[key]

    def _candidate_energy(self, metric: Metric):
        """Energy counted from each candidate's own layers (:class:`hwnas.devices.energy.CandidateEnergy`)
        where a device profile cannot give it: a supernet space searched with compression (profiles
        know architectures only), or a device here without a profile. None: the profile's cost model."""
        if metric.metric != "energy_mJ" or not isinstance(self.space_backend, SupernetSpace):
            return None
        from hwnas.devices.registry import find_device

        profile = find_device(metric.device)
        if profile is not None and not self.space_backend.joint.parts:
            return None
        if metric.key not in self._counted_energy:
            from hwnas.devices.energy import CandidateEnergy
            from hwnas.devices.spaces import device_space

            backend = self.space_backend
            dcfg = next(d for d in self.cfg.devices if d.name == metric.device)
            self._counted_energy[metric.key] = CandidateEnergy(
                backend.supernet, backend.space, device_space(backend.device_space).input_shape, dcfg.batch_size,
                profile.spec.precision if profile is not None else "fp32")
        return self._counted_energy[metric.key]

    def _device_cost_model(self, metric: Metric):
        if metric.device is None:
            return None
        from hwnas.devices.registry import list_devices

        if metric.device not in {p.name for p in list_devices()}:
            return None
        from hwnas.devices import cost_model

        if metric.device not in self._cost_models:
            # a compression search predicts from the profile's compressed table (its genomes are joint)
            model = cost_model(metric.device, self.space_backend.device_space,
                               joint=getattr(self.space_backend, "joint", None))
            self._reanchor(metric.device, model)
            self._cost_models[metric.device] = model
        model = self._cost_models[metric.device]
        if metric.metric not in model.metrics:
            raise HwnasError(f"device {metric.device!r} has no {metric.metric} model for this space "
                             f"(it has: {', '.join(model.metrics) or 'none'})")
        return model

    def _reanchor(self, device: str, model) -> None:
        """Scale a lookup table measured on this machine by how far the machine has moved since.

        The profile's reference sub-networks are timed again (once per run; the factor is
        stored, so a resume predicts alike). Only where latency is predicted from it.
        """
        from hwnas.devices.measure import reanchor_obstacle, reference_drift

        dcfg = next(d for d in self.cfg.devices if d.name == device)
        predicted = any(m.device == device and m.source == "predicted" and m.metric in ("latency_ms", "power_W")
                        for m in self.metrics)
        if dcfg.reanchor is False or not predicted:
            return
        obstacle = reanchor_obstacle(model)
        if obstacle is not None:
            if dcfg.reanchor is True:
                raise HwnasError(f"devices: {device}: reanchor: {obstacle}; set reanchor: auto or false")
            return
        key = f"latency_scale@{device}"
        scale = self.store.get_meta(key)
        if scale is None:
            settings = dcfg.model_dump(include={"batch_size", "threads", "warmup", "clock", "statistic"})
            scale = reference_drift(model, settings)
            self.store.set_meta(key, scale)
        model.latency_scale = float(scale)

    def latency_scales(self) -> Dict[str, float]:
        """Device -> the re-anchoring factor applied to its predicted latency in this run."""
        scales = {d.name: self.store.get_meta(f"latency_scale@{d.name}") for d in self.cfg.devices}
        return {name: float(scale) for name, scale in scales.items() if scale is not None}

    def estimated_keys(self) -> List[str]:
        """Metrics whose values are analytical estimates (energy/power of a device without measured energy)."""
        from hwnas.devices.energy import ESTIMATED

        out = []
        for m in self.metrics:
            if m.source == "predicted" and self._candidate_energy(m) is not None:
                out.append(m.key)
                continue
            model = self._device_cost_model(m) if m.source == "predicted" else None
            if model is not None and model.labels[m.metric] == ESTIMATED:
                out.append(m.key)
        return out

    def unmeasured(self) -> Dict[str, str]:
        """Metric key -> why its values stay predicted on the front (absent: measured there)."""
        out = {}
        estimated = self.estimated_keys()
        for m in self.metrics:
            if m.measurable:
                if m.source == "predicted" and not self.cfg.measure_front:
                    out[m.key] = "predicted during the search and not re-measured (measure_front: false)"
                continue
            loc = self.locations.get(m.device)
            if loc is not None and not loc.here:
                out[m.key] = f"{m.device} is external: {loc.where}"
            elif m.key in estimated and self._candidate_energy(m) is not None:
                out[m.key] = ("no energy meter here: an analytical estimate from each candidate's own layers "
                              "(int8 units as int8, pruned layers as they run)")
            elif m.key in estimated:
                out[m.key] = "no energy meter here: an analytical estimate from the device profile"
            else:
                out[m.key] = "no energy meter here: from the device profile's measured samples"
        return out

    def _fitted_predictor(self, key: str):
        from hwnas.predictors import AccuracyPredictor
        from hwnas.predictors.features import predictor_features

        samples = [c for c in self.store.candidates() if c.generation == 0 and key in c.measured]
        if len(samples) < 4:
            raise HwnasError(f"cannot predict {key}: only {len(samples)} measured samples "
                             f"(raise strategy.initial_samples or measure it)")
        features = predictor_features(self.space)
        X = features(np.array([c.genome for c in samples]))
        y = np.array([c.measured[key] for c in samples])
        model = AccuracyPredictor(random_state=self.cfg.strategy.seed).fit(X, y)
        return lambda G: model.predict(features(G))

    def _effective(self, cand: Candidate) -> Dict[str, float]:
        return {m.key: cand.value(m.key) for m in self.metrics}

    def _advance(self, n: int):
        if self.progress is not None and n:
            self.progress(n)

    # --- the run ------------------------------------------------------------------------------
    def initial_samples(self) -> np.ndarray:
        """Seeded random genomes measured in full before the search (generation 0).

        They fit the predictors of predicted metrics; none are needed when every predicted metric has a
        model of its own (a device's cost model, energy counted from the candidate's layers).
        """
        if all(m.source == "measured" or self._candidate_energy(m) is not None or self._device_cost_model(m) is not None
               for m in self.metrics):
            return np.zeros((0, self.space.n_var), dtype=int)
        rng = np.random.default_rng(self.cfg.strategy.seed + 7919)
        n = min(self.cfg.strategy.initial_samples, self.space.size)
        genomes, seen = [], set()
        ends = self.space.ends()  # predictors extrapolate badly beyond what they saw
        for g in ends:
            if self.space.key(g) in seen:
                continue
            if not self.space_backend.excluded(g[None])[0]:
                genomes.append(g)
                seen.add(self.space.key(g))
        while len(genomes) < n:
            g = self.space.sample(rng, 1)[0]
            if self.space.key(g) not in seen and not self.space_backend.excluded(g[None])[0]:
                seen.add(self.space.key(g))
                genomes.append(g)
        return np.array(genomes[:n], dtype=int)

    def run(self) -> RunSummary:
        from hwnas.search import SearchLoop, create_strategy

        start = time.time()
        self.store.set_meta("status", "running")
        if self.store.get_meta(DEFAULT_BACKEND_META) is None:  # candidates stored without it: an older run
            self.store.set_meta(DEFAULT_BACKEND_META, OLD_DEFAULT_BACKEND if self._candidates
                                else DeviceConfig.model_fields["backend"].default)
        self._warm_start()
        init = self.initial_samples()
        if len(init):
            self.evaluate(init, generation=0, sources=self._all_measured())
            self.store.record_generation(0)
        s = self.cfg.strategy
        batch = self.cfg.executor.workers if self.cfg.executor.kind == "ray" else 1
        loop = SearchLoop(ExperimentEvaluator(self), budget=self.budget, seed=s.seed, batch=batch,
                          on_generation=self.store.record_generation)
        create_strategy(s).run(loop)
        front = self.final_front()
        self.store.set_meta("status", "finished")
        wall = time.time() - start + float(self.store.get_meta("wall_time_s", 0.0))
        self.store.set_meta("wall_time_s", wall)
        return RunSummary(self.run_dir, len(self.store.candidates()), len(front), wall, front)

    def _record_provenance(self) -> None:
        """Keep the checkpoint's sha256 in the store (once, at the first start).

        A sub-network is only the one searched when rebuilt from the same weights: a resume or an
        export refuses a checkpoint file whose content changed since.
        """
        if self.cfg.space.supernet is None:
            return
        from hwnas.supernets import checkpoint_sha256

        sha = checkpoint_sha256(self.cfg.space.checkpoint)
        recorded = self.store.get_meta("checkpoint_sha256")
        if recorded is None:
            self.store.set_meta("checkpoint_sha256", sha)
        elif recorded != sha:
            raise HwnasError(f"{self.run_dir}: the run was searched on checkpoint sha256 {recorded[:12]}..., but "
                             f"{_resolve_checkpoint(self.cfg)} now has {sha[:12]}...; restore that checkpoint "
                             f"or start a new run")

    def _warm_start(self) -> None:
        """Copy the measured candidates of ``strategy.warm_start`` into this store (once; generation -2).

        They are answered from the store like any other, never measured again, and do not
        count against this run's budget of evaluations.
        """
        source = self.cfg.strategy.warm_start
        if source is None or self.store.get_meta("warm_start") is not None:
            return
        other_cfg = load_run_config(Path(source))
        if other_cfg.space != self.cfg.space:
            raise HwnasError(f"strategy.warm_start: {source} searched another space; it must have the same 'space'")
        other = ResultsStore(Path(source) / STORE_NAME)
        try:
            keys = {m.key for m in self.metrics}
            n = 0
            for cand in other.candidates():
                values = {k: v for k, v in cand.measured.items() if k in keys}
                if not values or cand.key in self._candidates:
                    continue
                cid = self.store.add_candidate(cand.key, cand.genome, cand.config, WARM_GENERATION)
                self.store.record(cid, values, "measured", cand.wall_time_s)
                self._candidates[cand.key] = Candidate(cid, cand.key, list(cand.genome), cand.config,
                                                       WARM_GENERATION, measured=dict(values))
                n += 1
        finally:
            other.close()
        self.store.set_meta("warm_start", {"run": str(source), "candidates": n})

    def continue_for(self, generations: int) -> None:
        """Let a finished run go on to ``generations`` in all (more than it has)."""
        if generations <= self.generations:
            raise HwnasError(f"{self.run_dir}: --generations {generations} must be more than the "
                             f"{self.generations} the run has")
        self.store.set_meta("generations", generations)
        self.store.set_meta("status", "running")
        self.generations = generations

    def expected_evaluations(self) -> int:
        """Candidates the run evaluates at most (for progress bars): initial samples, then the strategy's."""
        return self.budget + len(self.initial_samples())

    @property
    def finished(self) -> bool:
        return self.store.get_meta("status") == "finished"

    @property
    def budget(self) -> int:
        """Distinct candidates the strategy may evaluate: ``evaluations``, else population x generations
        (the generations of a continued run: 'hwnas resume --generations N')."""
        s = self.cfg.strategy
        return s.evaluations if s.evaluations is not None else s.population * self.generations


    def final_front(self) -> List[Candidate]:
        """The feasible non-dominated candidates; with ``measure_front``, all of them measured.

        Predictions can be optimistic: measuring the front can drop members and bring in
        others, so repeat until every member is measured (bounded by MAX_FRONT_ROUNDS).
        """
        all_measured = self._all_measured()
        extra = 0
        for _ in range(MAX_FRONT_ROUNDS if self.cfg.measure_front else 0):
            front = self.front()
            todo = [c for c in front if any(s == "measured" and k not in c.measured for k, s in all_measured.items())]
            if not todo:
                return front
            extra += len(todo)
            if self.on_total is not None:  # a progress bar grows by the front it measures
                self.on_total(self.expected_evaluations() + extra)
            # Front members are stored already, so no new candidate (and no generation) arises.
            self.evaluate(np.array([c.genome for c in todo]), generation=-1, sources=all_measured)
        return self.front(measured_only=self.cfg.measure_front)

    def front(self, measured_only: bool = False) -> List[Candidate]:
        return front_of(self.store.candidates(), self.metrics, self.cfg, measured_only)

    def _all_measured(self) -> Dict[str, str]:
        """Sources that measure every metric that can be measured (energy and power stay predicted)."""
        return {m.key: "measured" if m.measurable else m.source for m in self.metrics}

    def close(self):
        self.space_backend.close()
        self.store.close()


def front_of(candidates: Sequence[Candidate], metrics: Sequence[Metric], cfg: ExperimentConfig,
             measured_only: bool = False) -> List[Candidate]:
    """The feasible (every budget met) non-dominated ``candidates`` by effective values, in objective order.

    ``measured_only``: only candidates with every measurable metric measured (a finished run's
    front with ``measure_front``, as front.csv holds it).
    """
    from hwnas.search import nondominated

    def effective(c):
        return {m.key: c.value(m.key) for m in metrics}

    cands = [c for c in candidates if all(c.value(m.key) is not None for m in metrics)]
    if measured_only:
        cands = [c for c in cands if all(m.key in c.measured for m in metrics if m.measurable)]
    if not cands:
        return []
    feasible = (budget_slack([effective(c) for c in cands], cfg) <= 0).all(axis=1)
    cands = [c for c, ok in zip(cands, feasible) if ok]
    if not cands:
        return []
    F = objective_matrix([effective(c) for c in cands], metrics)
    # One row per distinct objective vector: ties are the same point of the front (the first found kept).
    idx = sorted(nondominated(F), key=lambda i: (tuple(F[i]), cands[i].id))
    distinct = [i for n, i in enumerate(idx) if n == 0 or tuple(F[i]) != tuple(F[idx[n - 1]])]
    return [cands[i] for i in distinct]


class ExperimentEvaluator:
    """The search loop's view of an :class:`Experiment` (``hwnas.search.Evaluator``).

    ``measure`` is ``Experiment.evaluate`` with the sources the file gives; ``front`` and
    ``final_front`` are the experiment's. Stored candidates are answered from the store, so
    a resumed run replays its strategy without evaluating anything twice.
    """

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.space = exp.space
        self.n_obj = sum(1 for m in exp.metrics if m.goal)
        self.n_constr = len(exp.cfg.budgets)

    def canonical(self, genomes):
        return self.exp.space_backend.canonical(np.asarray(genomes, dtype=int))

    def excluded(self, genomes):
        return self.exp.space_backend.excluded(np.asarray(genomes, dtype=int))

    def measure(self, genomes, generation):
        return self.exp.evaluate(genomes, generation)

    def features(self, genomes):
        return self.exp.space_backend.features(np.asarray(genomes, dtype=int))

    def warm(self):
        # what the run knew before the strategy began: a warm start's candidates, then the initial design
        cands = sorted((c for c in self.exp.store.candidates() if c.generation in (WARM_GENERATION, 0)),
                       key=lambda c: c.generation)
        rows = [self.exp._effective(c) for c in cands]
        X = np.array([c.genome for c in cands], dtype=int).reshape(len(cands), self.space.n_var)
        return X, objective_matrix(rows, self.exp.metrics), budget_slack(rows, self.exp.cfg)

    def front(self):
        return self.exp.front()

    def final_front(self):
        return self.exp.final_front()


class SupernetSpace:
    """A supernet's architecture space; measurement fans out over the executor."""

    def __init__(self, cfg: ExperimentConfig, metrics: Sequence[Metric]):
        from hwnas.dimensions import JointSpace
        from hwnas.supernets import load_checkpoint

        self.supernet = load_checkpoint(_resolve_checkpoint(cfg))
        # architecture x the compression dimensions searched (the supernet's own space if none)
        self.joint = JointSpace(self.supernet, cfg.space.dimensions, cfg.space.dimension_options)
        self.space = self.joint.space
        self.task = SupernetMeasureTask(_resolve_checkpoint(cfg), data_spec(cfg), cfg.devices, metrics,
                                        split=cfg.accuracy_eval.split, calib_images=cfg.accuracy_eval.calib_images,
                                        images=cfg.accuracy_eval.images, seed=cfg.strategy.seed)
        self.cfg = cfg
        self.device_space = device_space_name(cfg)  # how device profiles name this space
        self._executor = None
        self._on_nodes = None

    # Executors start on the first measurement: reading a run (report, API) starts no Ray.
    @property
    def executor(self):
        if self._executor is None:
            e = self.cfg.executor
            self._executor = create_executor(e.kind, workers=e.workers, address=e.address)
        return self._executor

    @property
    def on_nodes(self):
        """A device on a Ray node (its profile's ray_resource) is measured there: one actor pinned to the node."""
        if self._on_nodes is None:
            self._on_nodes = {}
            for name, loc in device_locations(self.cfg).items():
                if loc.ray_resource:
                    address = self.cfg.executor.address or os.environ.get("RAY_ADDRESS", "auto")
                    self._on_nodes[name] = create_executor("ray", workers=1, address=address,
                                                           resources={loc.ray_resource: 1})
        return self._on_nodes

    def canonical(self, genomes: np.ndarray) -> np.ndarray:
        return genomes

    def excluded(self, genomes: np.ndarray) -> np.ndarray:
        return np.zeros(len(genomes), dtype=bool)

    def features(self, genomes: np.ndarray) -> np.ndarray:
        from hwnas.predictors.features import predictor_features

        return predictor_features(self.space)(genomes)

    def decode(self, genome) -> Dict:
        return self.space.decode(genome)

    def describe(self, config: Dict) -> str:
        return self.joint.describe(config)

    def measure(self, requests):
        if not self.on_nodes:
            return self.executor.map(self.task, requests)
        return self._measure_on_nodes(list(requests))

    def _measure_on_nodes(self, requests):
        """Each device's costs on its node, the rest (accuracy, params, local devices) on the executor."""
        device_of = {key: m.device for key, m in self.task.metrics.items()}
        results = [({}, 0.0) for _ in requests]
        for where in list(self.on_nodes) + [None]:  # None: what the run's own executor measures
            def wanted(key, where=where):
                return device_of[key] == where if where else device_of[key] not in self.on_nodes

            part = [(i, (config, [k for k in keys if wanted(k)])) for i, (config, keys) in enumerate(requests)]
            part = [(i, request) for i, request in part if request[1]]
            executor = self.on_nodes.get(where, self.executor)
            for (i, _), (values, seconds) in zip(part, executor.map(self.task, [r for _, r in part])):
                results[i] = ({**results[i][0], **values}, results[i][1] + seconds)
        yield from results

    def exhaustive(self):
        return None  # a supernet's space is far too large to enumerate

    def close(self):
        for executor in (self._on_nodes or {}).values():
            executor.shutdown()
        if self._executor is not None:
            self._executor.shutdown()


def _resolve_checkpoint(cfg: ExperimentConfig) -> str:
    from hwnas.supernets import checkpoint_path

    return str(checkpoint_path(cfg.space.checkpoint))


class TableSpace:
    """A tabular benchmark (NAS-Bench-201, FBNet, OFA tables): every value is a lookup.

    Lookups are cheap, so they stay vectorised in process whatever the executor. Tables
    that sample a space (FBNet, OFA) answer a genome with its nearest stored architecture.
    """

    ACCURACY_COLUMNS = TABLE_ACCURACY

    def __init__(self, cfg: ExperimentConfig, metrics: Sequence[Metric]):
        from .tabular import TabularBenchmark

        self.bench = TabularBenchmark.load(cfg.space.tabular_space, cfg.space.table)
        self.space = self.bench.space
        self.metrics = {m.key: m for m in metrics}
        self.accuracy_column = self.ACCURACY_COLUMNS.get(cfg.data)
        self.complete = len(self.bench) >= self.space.size
        self.device_space = device_space_name(cfg)
        self.exclude_degenerate = cfg.space.degenerate == "exclude"

    def degenerate(self, genomes: np.ndarray) -> np.ndarray:
        """NB201 cells whose output is not connected to the input: chance accuracy at near-zero latency."""
        if self.bench.name != "nb201":
            return np.zeros(len(genomes), dtype=bool)
        from .tabular import Nb201Space

        return ~Nb201Space.live_edges(np.atleast_2d(genomes)).any(axis=1)

    def excluded(self, genomes: np.ndarray) -> np.ndarray:
        return self.degenerate(genomes) if self.exclude_degenerate else np.zeros(len(genomes), dtype=bool)

    def features(self, genomes: np.ndarray) -> np.ndarray:
        return self.bench.features(genomes)


    def canonical(self, genomes: np.ndarray) -> np.ndarray:
        if self.complete:
            return genomes
        G = self.bench.genomes
        return np.array([G[np.argmin((G != g).sum(axis=1))] for g in genomes])

    def decode(self, genome) -> Dict:
        return {"arch": self.bench.genome_to_arch(genome)}

    def describe(self, config: Dict) -> str:
        return config["arch"]

    def _column(self, m: Metric, genomes) -> np.ndarray:
        if m.metric == "accuracy":
            if self.accuracy_column is None:
                raise HwnasError(f"data: the table has accuracies for {', '.join(self.ACCURACY_COLUMNS)}; "
                                 f"set data to one of them")
            return self.bench.lookup(genomes, self.accuracy_column) / 100.0
        if m.metric == "flops":
            return 2.0 * self.bench.macs(genomes)
        if m.metric == "latency_ms":
            return self.bench.lookup(genomes, m.device)
        raise HwnasError(f"metric {m.metric!r} is not available on tabular space {self.bench.name!r}")

    def _values(self, genomes: np.ndarray, keys) -> Dict[str, np.ndarray]:
        return {k: self._column(self.metrics[k], genomes) for k in keys}  # NaN: the table has no value

    def measure(self, requests):
        """Table values; one the table lacks is left out: unknown, never a made-up measurement."""
        genomes = np.array([self.bench.arch_to_genome(config["arch"]) for config, _ in requests])
        columns = self._values(genomes, sorted({k for _, ks in requests for k in ks}))
        for i, (_, wanted) in enumerate(requests):
            yield {k: float(columns[k][i]) for k in wanted if np.isfinite(columns[k][i])}, 0.0

    def exhaustive(self):
        """Every architecture with all values known (complete tables only): the true front to compare with."""
        if not self.complete or not all(m.measurable for m in self.metrics.values()):
            return None  # energy and power are not in the table: no true front
        columns = self._values(self.bench.genomes, list(self.metrics))
        keep = np.all([np.isfinite(v) for v in columns.values()], axis=0) & ~self.excluded(self.bench.genomes)
        return [dict(zip(columns, vals)) for vals, ok in zip(zip(*columns.values()), keep) if ok]

    def close(self):
        pass


def create_space_backend(cfg: ExperimentConfig, metrics: Sequence[Metric]):
    if cfg.space.supernet is not None:
        return SupernetSpace(cfg, metrics)
    return TableSpace(cfg, metrics)


# --- run folders: hwnas.rundir (checks, lock, reuse, resume) -------------------------------------
def prepare_run_dir(cfg: ExperimentConfig, config_path: Path, out: Optional[Path]) -> Path:
    """Check, make and fill a new run folder (``hwnas run`` holds its lock through the run instead)."""
    run_dir = plan_run_dir(cfg, Path(config_path), out)
    start_run_dir(run_dir, Path(config_path))[0].release()
    return run_dir


def run_status(run_dir: Path, cfg: ExperimentConfig) -> Optional[Dict]:
    """A run folder's state from its store (None before the store exists): finished, candidates, generations."""
    path = Path(run_dir) / STORE_NAME
    if not path.is_file():
        return None
    store = ResultsStore(path)
    try:
        return {"finished": store.get_meta("status") == "finished", "candidates": len(store.candidates()),
                "generations": int(store.get_meta("generations", cfg.strategy.generations))}
    finally:
        store.close()


def load_run_config(run_dir: Path) -> ExperimentConfig:
    cfg, lock = resume_run_dir(run_dir)
    lock.release()
    return cfg
