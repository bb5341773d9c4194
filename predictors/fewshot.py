"""Meta-learned few-shot cost predictor (latency, or any per-device metric column).

Method (a meta-learned basis with a Bayesian linear head per device):

1. **Meta-training** learns one feature network ``phi(arch) -> R^k`` shared by all
   meta-training devices, plus one linear head per device, on each device's metric
   normalised by its values on HELP's 10 reference architectures (so every device's
   targets look like what an unseen device gives at adaptation time). The loss is MSE
   plus a pairwise logistic ranking term (the use is ranking architectures).
2. The learned heads define a prior over heads: a mixture of Gaussians centred on each
   meta-training head and on their mean, sharing the heads' (shrunk) covariance.
3. **Adaptation** to a new device from a few samples (by default the 10 reference
   architectures, i.e. HELP's hardware embedding doubles as the shots) is Bayesian linear
   regression in ``phi``-space under that prior: per component the posterior mean, with
   prior scale and noise chosen by the shots' marginal likelihood, averaged with weights
   from those likelihoods. No gradient steps: adaptation is instant and deterministic.
4. Optionally (``n_members > 1``) several seeds are trained and their adapted predictions
   averaged; on HELP's splits this changed rho by < 0.005, so the defaults use one.

Inference is one batched forward pass (features -> MLP with the adapted head folded into
its last layer); spaces of at most 2^17 architectures (NB201) precompute every prediction
at first use and then look them up (benchmarks/results/fewshot.md, "Inference throughput").
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from hwnas.errors import HwnasError
from hwnas.tabular import TabularBenchmark, TabularSpace, space_from_spec

FORMAT_VERSION = 1
PREDICT_CHUNK = 8192
MEMBER_ARRAYS = ("heads", "prior_mean", "prior_cov", "w", "proxy", "additive", "post_cov", "noise", "loo_mse")
FULL_TABLE_LIMIT = 1 << 17  # spaces this small get every prediction precomputed at first use
ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
POOL_LIMIT = {"nb201": 900, "fbnet": 4000, "ofa_mbv3": 4000}
# Per-space settings measured on HELP's splits (benchmarks/results/fewshot.md); each keeps
# meta-training around a minute per seed on one core.
DEFAULTS = {
    "nb201": {"hidden": 128, "epochs": 400, "n_members": 1},
    "fbnet": {"hidden": 128, "epochs": 500, "n_members": 1},
    "ofa_mbv3": {"hidden": 128, "epochs": 500, "n_members": 1},
}


# --------------------------------------------------------------------------- protocol
def _trim(rows: np.ndarray, values: np.ndarray, lo: float = 10.0, hi: float = 90.0) -> np.ndarray:
    v = values[rows]
    rows = rows[~np.isnan(v)]
    v = values[rows]
    if len(rows) == 0:
        return rows
    a, b = np.percentile(v, [lo, hi])
    return rows[(v >= a) & (v <= b)]


def help_split(bench: TabularBenchmark, column: str, pool_limit: int | None = None, query_size: int = 1000):
    """HELP's rows for one device: (pool, query), each trimmed to its 10th-90th percentile.

    Pool: ``arch_idx < pool_limit`` (900 NB201, 4000 FBNet/OFA); query: the next
    ``query_size`` arch_idx.
    """
    limit = POOL_LIMIT[bench.name] if pool_limit is None else pool_limit
    values = bench.values(column)
    idx = bench.arch_idx
    pool = np.flatnonzero(idx < limit)
    query = np.flatnonzero((idx >= limit) & (idx < limit + query_size))
    return _trim(pool, values), _trim(query, values)


# --------------------------------------------------------------------------- model
def _mlp(layers: Sequence[tuple], X: np.ndarray) -> np.ndarray:
    """Forward pass of the trunk; torch's fused SiLU is ~2x faster than numpy here."""
    import torch

    with torch.no_grad():
        h = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        for i, (W, b) in enumerate(layers):
            h = torch.addmm(torch.from_numpy(b), h, torch.from_numpy(W))
            if i < len(layers) - 1:
                h = torch.nn.functional.silu(h)
        return h.numpy()


def _with_bias(Phi: np.ndarray) -> np.ndarray:
    return np.concatenate([Phi, np.ones((Phi.shape[0], 1), dtype=Phi.dtype)], 1)


class FewShotPredictor:
    """Few-shot cost predictor for one tabular space.

    ``meta_fit(bench, columns)`` meta-trains; ``adapt(values, genomes=None)`` returns a copy
    fitted to a new device (genomes default to the stored reference architectures);
    ``fit(genomes, values)`` adapts in place (scikit-learn style); ``predict(genomes)``
    returns the metric in the units of the adaptation values.
    """

    def __init__(
        self,
        space: str = "nb201",
        embed_dim: int = 32,
        hidden: int = 128,
        epochs: int = 400,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        rank_weight: float = 0.5,
        n_members: int = 1,
        seed: int = 0,
        threads: int | None = None,
        proxies: bool = True,
    ):
        self.space = space
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.rank_weight = rank_weight
        self.n_members = n_members
        self.seed = seed
        self.threads = threads
        self.proxies = proxies
        self.members_: List[dict] = []
        self.reference_genomes_: np.ndarray | None = None
        self.meta_columns_: List[str] = []
        self.tspace_: TabularSpace | None = None  # set from the table (OFA's resolutions)
        self._table = self._folded_layers = None  # prediction caches, rebuilt after each fit

    @classmethod
    def for_space(cls, space: str, **overrides) -> "FewShotPredictor":
        """A predictor with the space's default settings (:data:`DEFAULTS`), overridable."""
        if space not in DEFAULTS:
            raise HwnasError(f"unknown tabular space {space!r}; known: {', '.join(DEFAULTS)}")
        return cls(space, **{**DEFAULTS[space], **{k: v for k, v in overrides.items() if v is not None}})

    # --- helpers -----------------------------------------------------------------
    @property
    def tspace(self) -> TabularSpace:
        if self.tspace_ is None:
            self.tspace_ = space_from_spec({"name": self.space})
        return self.tspace_

    def _require(self, what: str, adapted: bool = False):
        if not self.members_:
            raise HwnasError(f"FewShotPredictor.{what}: not meta-trained (call meta_fit or load a file)")
        if adapted and "w" not in self.members_[0]:
            raise HwnasError(f"FewShotPredictor.{what}: not adapted to a device (call adapt or fit)")

    def embed(self, genomes) -> List[np.ndarray]:
        """phi(arch) of every member, with a trailing 1 for the bias."""
        self._require("embed")
        X = self.tspace.features(genomes)
        return [_with_bias(_mlp(m["layers"], X)) for m in self.members_]

    # --- meta-training ---------------------------------------------------------------
    def meta_fit(
        self,
        bench: TabularBenchmark,
        columns: Sequence[str],
        rows: Mapping[str, np.ndarray] | np.ndarray | None = None,
    ) -> "FewShotPredictor":
        """Meta-train on ``columns`` (device names or metric columns) of ``bench``.

        ``rows``: the table rows to train on, one array for all columns or one per column
        (default: HELP's meta-training pool of each column).
        """
        import torch

        if not columns:
            raise HwnasError("meta_fit needs at least one device column")
        if self.space != bench.name:
            raise HwnasError(f"predictor is for space {self.space!r}, table is {bench.name!r}")
        self.tspace_ = bench.tspace
        names = [bench.column_name(c) for c in columns]
        refs = bench.rows_of_arch_idx(bench.reference_archs())
        self.reference_genomes_ = bench.genomes[refs].copy()

        # Target matrix over the union of training rows; NaN where a device is not trained.
        per_col = {}
        for c in names:
            r = rows.get(c, rows.get(c.removesuffix("_latency_ms"))) if isinstance(rows, Mapping) else rows
            per_col[c] = help_split(bench, c)[0] if r is None else np.asarray(r)
        union = np.unique(np.concatenate(list(per_col.values())))
        Y = np.full((len(union), len(names)), np.nan)
        for j, c in enumerate(names):
            values = bench.values(c)
            mean, std = _ref_stats(values[refs], values[per_col[c]])
            keep = np.isin(union, per_col[c])
            Y[keep, j] = (values[union[keep]] - mean) / std
        X = bench.features(bench.genomes[union])

        threads_before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self.members_ = [
                self._train_member(torch, X, Y, self.seed * 1000 + m) for m in range(self.n_members)
            ]
        finally:
            torch.set_num_threads(threads_before)
        self.meta_columns_ = names
        return self

    def _train_member(self, torch, X: np.ndarray, Y: np.ndarray, seed: int) -> dict:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        Xt = torch.as_tensor(X, dtype=torch.float32)
        Yt = torch.as_tensor(np.nan_to_num(Y), dtype=torch.float32)
        mask = torch.as_tensor(~np.isnan(Y), dtype=torch.float32)
        n, d = Yt.shape
        trunk = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], self.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(self.hidden, self.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(self.hidden, self.embed_dim),
        )
        heads = torch.nn.Linear(self.embed_dim, d)
        params = list(trunk.parameters()) + list(heads.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        for _ in range(self.epochs):
            pred = heads(trunk(Xt))
            loss = (((pred - Yt) ** 2) * mask).sum() / mask.sum()
            if self.rank_weight > 0:
                # Pairwise logistic ranking loss on random pairs, per device.
                perm = torch.randperm(n, generator=gen)
                dy = Yt - Yt[perm]
                dp = pred - pred[perm]
                pair = mask * mask[perm] * (dy.abs() > 1e-6)
                rank = torch.nn.functional.softplus(-torch.sign(dy) * dp * 4.0)
                loss = loss + self.rank_weight * (rank * pair).sum() / pair.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        layers = [
            (m.weight.detach().numpy().T.astype(np.float32).copy(), m.bias.detach().numpy().astype(np.float32).copy())
            for m in trunk
            if isinstance(m, torch.nn.Linear)
        ]
        W = torch.cat([heads.weight, heads.bias[:, None]], 1).detach().numpy().astype(np.float64)
        return {"layers": layers, "heads": W, **_head_prior(W)}

    # --- adaptation ------------------------------------------------------------------
    def fit(self, genomes, values) -> "FewShotPredictor":
        """Adapt in place to a device from samples (genomes, metric values)."""
        self._require("fit")
        G, y = self.tspace.samples(genomes, values)
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
        self._table = self._folded_layers = None  # caches of the previous adaptation
        z = (y - self.y_mean_) / self.y_std_
        proxies = _Proxies(self.tspace, G)
        self.weights_, resemblance = {}, []
        for member, Phi in zip(self.members_, self.embed(G)):
            fits = _candidates(Phi, z, member, proxies, self.meta_columns_) if self.proxies else \
                {"meta": _meta_fit(Phi, z, member)}
            weights = _loo_weights(fits, z)
            resemblance.append(_resemblance(list(fits), [np.mean((f["loo_mu"] - z) ** 2) for f in fits.values()]))
            member["w"], member["proxy"], member["additive"] = _combine(fits, weights, proxies, Phi.shape[1])
            member["post_cov"], member["noise"] = fits["meta"]["cov"], np.array([fits["meta"]["s2"]])
            loo = sum(w * fits[name]["loo_mu"] for name, w in weights.items())
            member["loo"] = loo * self.y_std_ + self.y_mean_
            member["loo_mse"] = np.array([np.mean((loo - z) ** 2)])
            for name, w in weights.items():
                self.weights_[name] = self.weights_.get(name, 0.0) + w / len(self.members_)
        self.loo_ = np.mean([m["loo"] for m in self.members_], 0)
        # How like the closest meta-training device the shots are (1 without the proxies' candidates).
        self.resemblance_ = float(np.mean(resemblance))
        return self

    def adapt(self, values, genomes=None) -> "FewShotPredictor":
        """A copy adapted to a new device. ``genomes=None``: values are for the reference archs."""
        self._require("adapt")
        if genomes is None:
            genomes = self.reference_genomes_
        return copy.deepcopy(self).fit(genomes, values)

    def predict(self, genomes) -> np.ndarray:
        self._require("predict", adapted=True)
        G = self.tspace.check(genomes)
        if self.tspace.space.size <= FULL_TABLE_LIMIT:
            # Small spaces (NB201: 15,625 cells): every prediction computed once, then looked up.
            if getattr(self, "_table", None) is None:
                all_genomes = np.array(np.unravel_index(np.arange(self.tspace.space.size),
                                                        tuple(self.tspace.space.upper + 1))).T
                self._table = self._predict_batched(all_genomes)
            return self._table[np.ravel_multi_index(G.T, tuple(self.tspace.space.upper + 1))]
        return self._predict_batched(G)

    def _predict_batched(self, G: np.ndarray) -> np.ndarray:
        folded = self._folded()
        out = np.empty(len(G))
        # Chunks keep the hidden activations in cache: ~2x faster on large batches.
        proxy = np.mean([m.get("proxy", np.zeros(1)) for m in self.members_], 0)
        additive = np.mean([m.get("additive", np.zeros(0)) for m in self.members_], 0)
        used = int(np.flatnonzero(proxy)[-1]) + 1 if proxy.any() else 0  # proxy columns with weight
        typed = used > _Proxies.N_FIXED + len(self.tspace.op_counts(G[:1])[0])
        for start in range(0, len(G), PREDICT_CHUNK):
            g = G[start : start + PREDICT_CHUNK]
            z = sum(_mlp(layers, self.tspace.features(g))[:, 0] for layers in folded) / len(folded)
            if proxy.any():  # analytical proxies that the shots gave weight to (MACs, values moved, ...)
                # Files saved before op counts have 3 columns; the per-block-type work only when it has weight.
                z = z + _Proxies.raw(self.tspace, g, typed)[:, :used] @ proxy[:used]
            if additive.size and additive.any():
                z = z + self.tspace.additive_features(g) @ additive
            out[start : start + PREDICT_CHUNK] = z
        return out * self.y_std_ + self.y_mean_

    def _folded(self) -> List[list]:
        """Per member, the trunk with the adapted head folded into its last (linear) layer:
        (h @ W + b) @ w + w0 = h @ (W @ w) + (b @ w + w0), one output column instead of k."""
        if getattr(self, "_folded_layers", None) is None:
            folded = []
            for m in self.members_:
                w = m["w"].astype(np.float64)
                W, b = m["layers"][-1]
                W1 = (W.astype(np.float64) @ w[:-1])[:, None].astype(np.float32)
                b1 = np.array([b.astype(np.float64) @ w[:-1] + w[-1]], dtype=np.float32)
                folded.append(list(m["layers"][:-1]) + [(np.ascontiguousarray(W1), b1)])
            self._folded_layers = folded
        return self._folded_layers

    # --- uncertainty: which architectures to measure next, and what rho to expect ---------------
    def candidate_pool(self, size: int = 20000, seed: int = 0) -> np.ndarray:
        """Architectures to choose among: every cell of a space that small (NB201), else a seeded sample."""
        space = self.tspace.space
        if space.size <= size:
            return np.array(np.unravel_index(np.arange(space.size), tuple(space.upper + 1))).T
        return space.sample(np.random.default_rng(seed), size)

    def _head_uncertainty(self, member: dict):
        """Covariance of the meta-learned head and the noise level: the posterior after adaptation,
        else the prior (the spread of the meta-training devices' heads, noise 0.05 in standard units)."""
        if "post_cov" in member:
            return member["post_cov"], float(member["noise"][0])
        return member["prior_cov"], 0.05

    def suggest(self, n: int, measured=None, pool=None) -> np.ndarray:
        """``n`` architectures that most reduce the uncertainty of the meta-learned head, chosen greedily
        (each the pool's architecture of largest predictive variance given the ones before it and the
        ``measured`` genomes, default the reference architectures). The reduction does not depend on
        the values still to be measured, so all ``n`` are chosen before any is measured."""
        self._require("suggest")
        member = self.members_[0]
        pool = self.candidate_pool(1 << 14) if pool is None else self.tspace.check(pool)
        measured = self.reference_genomes_ if measured is None else self.tspace.check(measured)
        taken = {g.tobytes() for g in np.asarray(measured, dtype=np.int64)}
        keep = np.array([g.tobytes() not in taken for g in pool.astype(np.int64)])
        pool = pool[keep]
        S, s2 = self._head_uncertainty(member)
        if "post_cov" not in member:  # the prior: condition on what is measured already
            S = _condition(S, self.embed(measured)[0], s2)
        Phi = self.embed(pool)[0]
        var = np.einsum("ij,jk,ik->i", Phi, S, Phi)
        chosen = []
        for _ in range(min(n, len(pool))):
            i = int(np.argmax(var))
            chosen.append(i)
            v = S @ Phi[i]
            S = S - np.outer(v, v) / (s2 + Phi[i] @ v)
            var = var - (Phi @ v) ** 2 / (s2 + Phi[i] @ v)
            var[chosen] = -np.inf
        return pool[chosen]

    def expected_rho(self, extra: int = 0, pool=None, draws: int = 200, seed: int = 0) -> float:
        """Spearman rho between the adapted prediction and the device's true costs that the model
        itself expects over the candidate pool (heads drawn from the posterior of the meta-learned
        model), after ``extra`` more samples chosen by :meth:`suggest`, plus independent errors as large
        as the adapted model's leave-one-out error on the shots (what the head's posterior cannot see:
        a device unlike every candidate; more samples do not shrink it)."""
        from scipy.stats import rankdata

        self._require("expected_rho", adapted=True)
        member = self.members_[0]
        pool = self.candidate_pool(2000) if pool is None else self.tspace.check(pool)
        S, s2 = self._head_uncertainty(member)
        if extra:
            S = _condition(S, self.embed(self.suggest(extra))[0], s2)
        Phi = self.embed(pool)[0]
        mean = (self._predict_batched(pool) - self.y_mean_) / self.y_std_  # standard units, proxies included
        L = np.linalg.cholesky(S + 1e-9 * np.eye(len(S)))
        rng = np.random.default_rng(seed)
        eps = rng.standard_normal((len(S), draws))
        misfit = np.sqrt(float(member.get("loo_mse", np.zeros(1))[0]))
        # The head's uncertainty counts as much as the meta-learned model is weighed (alone or with
        # proxies beside it: the meta_* candidates).
        share = sum(w for k, w in self.weights_.items() if k == "meta" or k.startswith("meta_"))
        head = share * Phi @ (L @ eps)
        truth = mean[:, None] + head + misfit * rng.standard_normal((len(mean), draws))
        r_mean = rankdata(mean)
        r_truth = np.apply_along_axis(rankdata, 0, truth)
        r_mean, r_truth = r_mean - r_mean.mean(), r_truth - r_truth.mean(0)
        rho = (r_mean @ r_truth) / np.sqrt((r_mean @ r_mean) * (r_truth**2).sum(0))
        return float(np.mean(rho))

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """One ``.npz`` (arrays + a JSON header; loads with ``allow_pickle=False``)."""
        self._require("save")
        path = Path(path)
        arrays: Dict[str, np.ndarray] = {"reference_genomes": np.asarray(self.reference_genomes_)}
        for i, m in enumerate(self.members_):
            for j, (W, b) in enumerate(m["layers"]):
                arrays[f"m{i}_W{j}"], arrays[f"m{i}_b{j}"] = W, b
            for key in MEMBER_ARRAYS:
                if key in m:
                    arrays[f"m{i}_{key}"] = m[key]
        header = {
            "format": FORMAT_VERSION,
            "space": self.tspace.spec(),
            "params": self.get_params(),
            "n_layers": len(self.members_[0]["layers"]),
            "meta_columns": self.meta_columns_,
            "adapted": {"y_mean": self.y_mean_, "y_std": self.y_std_, "weights": self.weights_,
                        "loo": list(self.loo_), "resemblance": getattr(self, "resemblance_", 1.0)}
            if "w" in self.members_[0] else None,
        }
        arrays["header"] = np.array(json.dumps(header))
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FewShotPredictor":
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            header = json.loads(str(arrays["header"]))
        except FileNotFoundError:
            raise HwnasError(f"predictor file not found: {path}") from None
        except (OSError, ValueError, KeyError) as err:
            raise HwnasError(f"not a FewShotPredictor file: {path} ({err})") from None
        if header.get("format") != FORMAT_VERSION:
            raise HwnasError(f"{path}: predictor format {header.get('format')} (expected {FORMAT_VERSION})")
        pred = cls(**header["params"])
        pred.tspace_ = space_from_spec(header["space"])
        pred.reference_genomes_ = arrays["reference_genomes"]
        pred.meta_columns_ = header["meta_columns"]
        i = 0
        while f"m{i}_W0" in arrays:
            m = {"layers": [(arrays[f"m{i}_W{j}"], arrays[f"m{i}_b{j}"]) for j in range(header["n_layers"])]}
            for key in MEMBER_ARRAYS:
                if f"m{i}_{key}" in arrays:
                    m[key] = arrays[f"m{i}_{key}"]
            pred.members_.append(m)
            i += 1
        if header["adapted"]:
            pred.y_mean_, pred.y_std_ = header["adapted"]["y_mean"], header["adapted"]["y_std"]
            pred.weights_ = header["adapted"].get("weights", {"meta": 1.0})
            pred.loo_ = np.array(header["adapted"].get("loo", []), dtype=float)
            pred.resemblance_ = float(header["adapted"].get("resemblance", 1.0))
        return pred

    def get_params(self) -> dict:
        return {
            "space": self.space,
            "embed_dim": self.embed_dim,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "rank_weight": self.rank_weight,
            "n_members": self.n_members,
            "seed": self.seed,
            "threads": self.threads,
            "proxies": self.proxies,
        }

    def __repr__(self) -> str:
        state = "adapted" if self.members_ and "w" in self.members_[0] else ("meta-trained" if self.members_ else "new")
        return f"FewShotPredictor({self.tspace.name!r}, members={self.n_members}, {state})"


def _condition(S: np.ndarray, Phi: np.ndarray, s2: float) -> np.ndarray:
    """Covariance of a Gaussian head after observing it at the rows of ``Phi`` with noise ``s2``."""
    SP = S @ Phi.T
    return S - SP @ np.linalg.solve(Phi @ SP + s2 * np.eye(len(Phi)), SP.T)


def _ref_stats(ref_values: np.ndarray, fallback: np.ndarray):
    """Mean/std used to normalise a device: its reference-arch values when all are known."""
    v = ref_values if np.isfinite(ref_values).all() else fallback[np.isfinite(fallback)]
    std = float(v.std())
    return float(v.mean()), (std if std > 0 else 1.0)


def _head_prior(W: np.ndarray, shrink: float = 0.3) -> dict:
    """Gaussian prior over device heads: their mean and a shrunk covariance (few devices)."""
    mean = W.mean(0)
    centred = W - mean
    cov = centred.T @ centred / max(1, len(W) - 1) if len(W) > 1 else np.zeros((W.shape[1],) * 2)
    scale = max(float(np.trace(cov)) / W.shape[1], 1e-3)
    cov = (1 - shrink) * cov + shrink * scale * np.eye(W.shape[1])
    return {"prior_mean": mean, "prior_cov": cov}


_PRIOR_SCALES = np.exp(np.linspace(np.log(0.1), np.log(30.0), 13))
_NOISE_VARS = np.exp(np.linspace(np.log(1e-3), np.log(1.0), 13))
_GRID = tuple(g.reshape(-1) for g in np.meshgrid(_PRIOR_SCALES, _NOISE_VARS, indexing="ij"))
_EXTRA_RATIOS = (0.01, 0.1, 1.0)  # prior scale of the extra proxy columns relative to the meta-learned head's
FLEX_MIN_SHOTS = 20  # from this many shots on, candidates with many coefficients are weighed too
MIN_WEIGHT = 1e-3  # candidates below this share of the leave-one-out weight are dropped
BOOTSTRAP_DRAWS = 1000  # Bayesian-bootstrap draws of the shots for the candidates' weights (_loo_weights)
META_PRIOR = 8.0  # prior log-odds of the meta-learned model against each alternative (_loo_weights)


def _blr(B: np.ndarray, z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> dict:
    """Bayesian linear regression ``z ~ B beta + noise``, ``beta ~ N(mean, a cov)``, noise ``s2``, at the
    (a, s2) of a grid that maximises the marginal likelihood.

    Returns the log marginal likelihood ``ll``, the posterior mean ``beta`` and the closed-form
    leave-one-out predictive mean and variance of every sample (``loo_mu``, ``loo_var``; Rasmussen &
    Williams eq. 5.12: the model refitted without sample i, with the (a, s2) that maximise the marginal
    likelihood of the other samples) and that likelihood (``loo_ll``).
    """
    B, z = B.astype(np.float64), z.astype(np.float64)
    resid = z - B @ mean
    # K = a B cov B^T + s2 I shares its eigenvectors over the whole grid: one decomposition, then
    # every (a, s2) in O(n) (the log-likelihood is -r^T K^-1 r / 2 - log det K / 2).
    lam, U = np.linalg.eigh(B @ cov @ B.T)
    lam = np.maximum(lam, 0.0)
    rt = U.T @ resid
    a, s2 = _GRID
    d = a[:, None] * lam[None, :] + s2[:, None]
    ll = -0.5 * (rt**2 / d).sum(1) - 0.5 * np.log(d).sum(1)
    best = int(np.argmax(ll))
    Kinv = (U / d[best]) @ U.T
    alpha = Kinv @ resid
    n = len(z)
    AB = a[best] * cov @ B.T
    # Leave-one-out with (a, s2) chosen again without the left-out shot: every grid point's leave-one-out
    # density of each shot in O(n) (Rasmussen & Williams eq. 5.10-5.12), its log-likelihood without the
    # shot = ll minus that density. Choosing (a, s2) on all shots made flexible candidates look better
    # than they predict.
    alpha_g = U @ (rt[:, None] / d.T)  # (n, grid)
    kdiag_g = (U**2) @ (1.0 / d.T)
    mu_g, var_g = resid[:, None] - alpha_g / kdiag_g, 1.0 / kdiag_g
    logp = -0.5 * np.log(2 * np.pi * var_g) - 0.5 * (resid[:, None] - mu_g) ** 2 / var_g
    ll_without = ll[None, :] - 0.5 * n * np.log(2 * np.pi) - logp
    pick = np.argmax(ll_without, 1)
    rows = np.arange(n)
    return {"ll": float(ll[best]) - 0.5 * n * np.log(2 * np.pi), "beta": mean + AB @ alpha,
            "loo_mu": B @ mean + mu_g[rows, pick],
            "loo_var": var_g[rows, pick], "loo_ll": ll_without[rows, pick],
            "a": float(a[best]), "s2": float(s2[best]), "cov": a[best] * cov - AB @ Kinv @ AB.T}


def _meta_fit(Phi: np.ndarray, z: np.ndarray, member: dict, extra: np.ndarray | None = None) -> dict:
    """The meta-learned head for a new device: Bayesian model average over a mixture prior.

    The mixture has one component centred on each meta-training device's head plus one on
    their mean, all with the shared covariance; a new device that resembles one
    meta-training device (e.g. another GPU at batch size 1) then borrows that device's head
    instead of a blend dominated by the majority of devices.
    """
    cov = member["prior_cov"]
    centres = [*member["heads"], member["prior_mean"]]
    if extra is None:
        fits = [_blr(Phi, z, centre, cov) for centre in centres]
    else:
        # The meta-learned head beside a zero-mean head on ``extra`` (standardised proxy columns) whose
        # prior scale, relative to the meta-learned one, the marginal likelihood picks.
        k1, k2 = Phi.shape[1], extra.shape[1]
        B = np.hstack([Phi, extra])
        scale = float(np.trace(cov)) / k1
        fits = []
        for ratio in _EXTRA_RATIOS:
            big = np.zeros((k1 + k2, k1 + k2))
            big[:k1, :k1], big[k1:, k1:] = cov, ratio * scale * np.eye(k2)
            fits += [_blr(B, z, np.concatenate([centre, np.zeros(k2)]), big) for centre in centres]
        for f in fits:
            f["extra"], f["beta"] = f["beta"][k1:], f["beta"][:k1]
            f["cov"] = f["cov"][:k1, :k1]
    ll = np.array([f["ll"] for f in fits])
    w = np.exp(ll - ll.max())
    w /= w.sum()
    # Leave-one-out, the components' weights too from the other shots alone.
    lw = np.array([f["loo_ll"] for f in fits])
    wl = np.exp(lw - lw.max(0))
    wl /= wl.sum(0)
    mu = sum(wi * f["loo_mu"] for wi, f in zip(wl, fits))
    var = sum(wi * (f["loo_var"] + f["loo_mu"] ** 2) for wi, f in zip(wl, fits)) - mu**2
    head = sum(wi * f["beta"] for wi, f in zip(w, fits))
    # Posterior covariance of the head and noise, averaged over the components (for uncertainty only).
    cov = sum(wi * f["cov"] for wi, f in zip(w, fits))
    noise = sum(wi * f["s2"] for wi, f in zip(w, fits))
    out = {"phi": head, "loo_mu": mu, "loo_var": np.maximum(var, 1e-12), "cov": cov, "s2": noise}
    if extra is not None:
        out["extra"] = sum(wi * f["extra"] for wi, f in zip(w, fits))
    return out


class _Proxies:
    """Analytical proxies of cost for the adaptation: MACs and values moved (weights + activations,
    :meth:`TabularSpace.counts`), in millions, the operators that run, and the operators of each type
    (:meth:`TabularSpace.op_counts`), standardised on the shots; and the layer-wise additive indicators
    (a per-(layer, option) cost table)."""

    N_FIXED = 5  # raw columns before the operator counts

    def __init__(self, tspace: TabularSpace, G: np.ndarray):
        raw = self.raw(tspace, G)
        self.mu, self.sd = raw.mean(0), raw.std(0)
        self.sd[self.sd == 0] = 1.0
        self.std = (raw - self.mu) / self.sd
        self.additive = tspace.additive_features(G).astype(np.float64)
        self.op_sets = {name: [self.N_FIXED + c for c in cols] for name, cols in tspace.op_count_sets.items()}
        n_typed = tspace.typed_work(G[:1]).shape[1]
        self.typed = list(range(raw.shape[1] - n_typed, raw.shape[1]))

    @staticmethod
    def raw(tspace: TabularSpace, G: np.ndarray, typed: bool = True) -> np.ndarray:
        """(n, 5 + k [+ 4 t]): MACs and values moved in millions, the operators that run (kernel launches),
        weight and activation values moved apart (millions), the operators of each type, and (``typed``)
        the per-block-type work (:meth:`TabularSpace.typed_work`)."""
        counts = tspace.counts(G)
        fixed = np.stack([tspace.macs(G) / 1e6, (counts[:, 1] + counts[:, 2]) / 1e6, tspace.layers(G),
                          counts[:, 1] / 1e6, counts[:, 2] / 1e6], 1)
        return np.hstack([fixed, tspace.op_counts(G)] + ([tspace.typed_work(G)] if typed else []))

    # Analytical models of cost: compute-bound (MACs), memory-bound (values moved), both (a roofline
    # sum), per-kernel overhead (small-batch GPUs: the operators that run), and overhead + roofline;
    # the same with weight and activation traffic apart (at a large batch the weights are read once per
    # batch, the activations once per image); then a cost per operator type (int8 and accelerator
    # kernels, framework overhead), alone and beside the roofline (types and sizes).
    BASES = {"flops": [0], "bytes": [1], "roofline": [0, 1], "layers": [2], "launch_roofline": [0, 1, 2],
             "traffic": [0, 3, 4], "launch_traffic": [0, 2, 3, 4]}

    def flexible_columns(self) -> list:
        """The raw columns of the per-block-type roofline (:meth:`TabularSpace.typed_work`) beside the
        overall MACs, values moved and operators that run: what a device's own shots can fit when there
        are enough of them (:data:`FLEX_MIN_SHOTS`)."""
        return [0, 1, 2] + self.typed if self.typed else []

    def bases(self, flexible: bool = False):
        """name -> (basis with a trailing 1, columns of the raw proxies it uses or None for additive);
        ``flexible``: also the per-block-type rooflines (many coefficients: for 20 shots or more)."""
        one = np.ones((len(self.std), 1))
        sets = dict(self.BASES)
        for name, cols in self.op_sets.items():
            sets[name], sets[f"{name}_roofline"] = cols, [0, 1] + cols
        if flexible and self.typed and len(self.std) > 2 * len(self.flexible_columns()):
            sets["typed"], sets["typed_roofline"] = self.typed, self.flexible_columns()
        out = {name: (np.hstack([self.std[:, cols], one]), cols) for name, cols in sets.items()}
        out["layerwise"] = (np.hstack([self.additive, one]), None)
        return out

    def to_raw(self, beta: np.ndarray, columns) -> tuple:
        """A fitted basis's coefficients as (proxy coefficients on raw MACs and values, additive
        coefficients, constant)."""
        proxy, additive = np.zeros(self.std.shape[1]), np.zeros(self.additive.shape[1])
        if columns is None:
            return proxy, beta[:-1], float(beta[-1])
        proxy[columns] = beta[:-1] / self.sd[columns]
        return proxy, additive, float(beta[-1] - (beta[:-1] * self.mu[columns] / self.sd[columns]).sum())


def _candidates(Phi: np.ndarray, z: np.ndarray, member: dict, proxies: _Proxies, names: Sequence[str]) -> dict:
    """Every model the shots choose among: the meta-learned head; each meta-training device's head
    alone, scaled and shifted (the nearest device); a zero-mean head on the embedding (what the
    shots say when no meta-training device is like them); and the analytical proxies."""
    k1 = Phi.shape[1]
    fits = {"meta": _meta_fit(Phi, z, member)}
    one = np.ones((len(z), 1))
    for head, name in zip(member["heads"], names):
        f = Phi @ head
        mu, sd = f.mean(), f.std() or 1.0
        fit = _blr(np.hstack([((f - mu) / sd)[:, None], one]), z, np.zeros(2), np.eye(2))
        b0, b1 = fit["beta"]
        phi = b0 / sd * head
        phi[-1] += b1 - b0 * mu / sd
        fits[f"device:{name.removesuffix('_latency_ms')}"] = {**fit, "phi": phi}
    scale = float(np.trace(member["prior_cov"])) / k1
    fit = _blr(Phi, z, np.zeros(k1), scale * np.eye(k1))
    fits["embedding"] = {**fit, "phi": fit["beta"]}
    flexible = len(z) >= FLEX_MIN_SHOTS
    for name, (B, columns) in proxies.bases(flexible).items():
        fit = _blr(B, z, np.zeros(B.shape[1]), np.eye(B.shape[1]))
        fits[name] = {**fit, "raw": proxies.to_raw(fit["beta"], columns)}
    # The meta-learned model with analytical proxies beside it, for what the meta-training devices do not
    # show (a GPU held out of meta-training: its launches and depthwise kernels): the overall roofline and
    # operators by type, and with more shots than it has coefficients, the per-block-type roofline.
    extras = {f"meta_{name}": [0, 1, 2] + cols for name, cols in proxies.op_sets.items()}
    extras["meta_typed"] = proxies.flexible_columns()
    for name, cols in extras.items():
        if flexible and cols and len(z) > len(cols):
            fit = _meta_fit(Phi, z, member, proxies.std[:, cols])
            fits[name] = {**fit, "raw": proxies.to_raw(np.append(fit["extra"], 0.0), cols)}
    return fits


def _loo_weights(fits: dict, z: np.ndarray) -> Dict[str, float]:
    """Weights of the candidates from the shots alone: each one's leave-one-out error as a Gaussian
    predictive density, ``-n/2 log(LOO MSE)`` (pseudo-Bayesian model averaging, Yao et al. 2018, with one
    noise level per candidate: per-shot variances made a lucky flexible model look certain), plus
    prior log-odds :data:`META_PRIOR` x :func:`_resemblance` squared for the meta-learned model, the
    one trained to transfer, as far as the meta-training devices resemble the shots; averaged over
    Bayesian-bootstrap reweightings of the shots (pseudo-BMA+). Every choice a candidate makes from the
    shots (prior scale, noise, mixture component) is made again without the left-out shot. With
    ten shots a proxy's better fit is often chance; on HELP's splits the prior kept every device at
    its meta-learned figure while a proxy takes over where the shots clearly favour it
    (benchmarks/results/fewshot.md)."""
    names = list(fits)
    mse = np.array([np.mean((fits[n]["loo_mu"] - z) ** 2) for n in names])
    prior = META_PRIOR * _resemblance(names, mse) ** 2
    odds = np.array([prior * (n == "meta") for n in names])
    # Pseudo-BMA+ (Yao et al. 2018): the scores averaged over Bayesian-bootstrap reweightings of the
    # shots, so that a lead resting on one or two shots does not take all the weight.
    m = np.maximum(mse, 1e-12)[:, None]
    lpd = -0.5 * np.log(m) - 0.5 * np.array([(fits[n]["loo_mu"] - z) ** 2 for n in names]) / m
    draws = np.random.default_rng(0).dirichlet(np.ones(len(z)), BOOTSTRAP_DRAWS)
    scores = len(z) * draws @ lpd.T + odds  # (draws, candidates)
    w = np.exp(scores - scores.max(1, keepdims=True))
    w = (w / w.sum(1, keepdims=True)).mean(0)
    return _normalise(names, np.log(np.maximum(w, 1e-300)))


def _resemblance(names, mse) -> float:
    """How much of the shots' variance the closest meta-training device explains: 1 minus the smallest
    leave-one-out MSE of the ``device:*`` candidates (each one device's head, scaled and shifted), in
    [0, 1]; 1 where there are none. The meta-learned model's prior odds are :data:`META_PRIOR` times its
    square: a device like the meta-training ones (HELP's validation devices: 0.96-0.99) keeps nearly all
    of them, one unlike all of them (a GPU when no GPU was meta-trained on: about 0.5) little, so its
    shots decide (issue 23.2: a prior that can leave the meta-training heads behind)."""
    dev = [m for n, m in zip(names, mse) if n.startswith("device:")]
    return float(np.clip(1.0 - min(dev), 0.0, 1.0)) if dev else 1.0


def _normalise(names, scores) -> Dict[str, float]:
    w = np.exp(scores - scores.max())
    w /= w.sum()
    keep = w >= MIN_WEIGHT
    return {n: float(wi) for n, wi, k in zip(names, w / w[keep].sum(), keep) if k}


def _combine(fits: dict, weights: Dict[str, float], proxies: _Proxies, k1: int):
    """The weighted candidates as one head on the embedding (bias last), proxy coefficients on raw
    MACs and values moved, and additive coefficients: prediction stays one trunk pass plus a dot."""
    w, proxy, additive = np.zeros(k1), np.zeros(proxies.std.shape[1]), np.zeros(proxies.additive.shape[1])
    for name, share in weights.items():
        f = fits[name]
        if "phi" in f:
            w += share * f["phi"]
        if "raw" in f:
            p, a, c = f["raw"]
            proxy += share * p
            additive += share * a
            w[-1] += share * c
    return w, proxy, additive


def artifact_path(space: str) -> Path:
    return ARTIFACT_DIR / f"{space}.npz"


def load_pretrained(space: str) -> FewShotPredictor:
    """The shipped predictor meta-trained on every device of the space's table."""
    path = artifact_path(space)
    if not path.is_file():
        raise HwnasError(
            f"no pretrained few-shot predictor for {space!r} (expected {path.name}; "
            "run scripts/meta_train_predictors.py)"
        )
    return FewShotPredictor.load(path)
