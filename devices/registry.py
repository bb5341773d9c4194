"""Device profiles: a folder per device with ``device.yaml`` and one samples CSV per space.

Layout of ``<home>/<NAME>/``::

    device.yaml                 name, kind, hardware, backend, batch_size, threads, precision,
                                peak_gflops, bandwidth_gbs, source, labels, ray_resource, spaces
    samples-<space>.csv         arch, latency_ms [, latency_median_ms, latency_iqr_ms, energy_mJ, power_W]
    lut-<space>.json            (supernet spaces, after ``measure``) per-block latency table

Home: the ``home`` argument, else ``$HWNAS_HOME/devices``, else ``~/.hwnas/devices``.
Profiles shipped with the package (``devices/profiles/``, read-only) are found too; a user
profile of the same name shadows a shipped one. Every write builds the new profile in a
temporary folder beside it and renames it into place, so a failed write leaves the
registry as it was.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwnas.errors import ConfigError, HwnasError

from .spaces import DeviceSpace, device_space

SHIPPED_DIR = Path(__file__).resolve().parent / "profiles"
PROFILE_FILE = "device.yaml"
MIN_SAMPLES = 5
RECOMMENDED_SAMPLES = 10  # the space's reference architectures
REQUIRED_COLUMNS = ("arch", "latency_ms")
OPTIONAL_COLUMNS = ("latency_median_ms", "latency_iqr_ms", "energy_mJ", "power_W")
METRIC_COLUMNS = ("latency_ms", "energy_mJ", "power_W")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def devices_home(home: Optional[os.PathLike] = None) -> Path:
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("HWNAS_HOME")
    return (Path(env).expanduser() if env else Path.home() / ".hwnas") / "devices"


class DeviceSpec(BaseModel):
    """What ``device.yaml`` may hold (unknown keys are an error, so typos are caught)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    kind: Literal["cpu", "gpu", "phone", "board", "accelerator", "fpga", "other"] = "other"
    hardware: str = ""
    backend: str = "external"  # who measured: a backend name, or "external"/"table" for given samples
    batch_size: int = Field(default=1, ge=1)
    threads: Optional[int] = Field(default=None, ge=1)
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    clock: Optional[Literal["wall", "cpu"]] = None  # how a measuring backend timed (hwnas devices measure)
    statistic: Optional[Literal["min", "median"]] = None
    peak_gflops: Optional[float] = Field(default=None, gt=0)
    bandwidth_gbs: Optional[float] = Field(default=None, gt=0)
    source: str = ""
    host: Optional[str] = None  # the machine a local backend measured on (hwnas devices measure)
    labels: List[str] = []  # e.g. "simulated", "estimated", "shipped"
    ray_resource: Optional[str] = None  # e.g. "device:NAME": measurements run on the Ray node holding it
    spaces: Dict[str, str] = {}  # file slug -> space spec


@dataclass
class Samples:
    """Validated samples of one device on one space (row order kept)."""

    space: str
    archs: List[str]
    genomes: np.ndarray
    values: Dict[str, np.ndarray]  # metric column -> values, only the columns present
    path: Optional[Path] = None

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def metrics(self) -> List[str]:
        return [m for m in METRIC_COLUMNS if m in self.values]


@dataclass
class DeviceProfile:
    spec: DeviceSpec
    path: Path
    shipped: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def spaces(self) -> List[str]:
        return list(self.spec.spaces.values())

    def file(self, prefix: str, space: str, suffix: str = "csv") -> Path:
        return self.path / f"{prefix}-{device_space(space).slug}.{suffix}"

    def has_space(self, space: str) -> bool:
        return self.file("samples", space).is_file()

    def samples(self, space: str) -> Samples:
        if not self.has_space(space):
            have = ", ".join(self.spaces) or "none"
            raise HwnasError(f"device {self.name!r} has no samples for space {space!r} (it has: {have}); "
                             f"add them with 'hwnas devices add {self.name} --space {space} --samples FILE.csv' "
                             f"or 'hwnas devices measure'")
        return read_samples(self.file("samples", space), space)


# --------------------------------------------------------------------------- samples
def _number(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise HwnasError(f"{where}: column {column}: {text!r} is not a number; allowed: a finite number > 0") \
            from None
    if not math.isfinite(value) or value <= 0:
        raise HwnasError(f"{where}: column {column}: {text} is not allowed; allowed: a finite number > 0")
    return value


def read_samples(path: os.PathLike, space: str | DeviceSpace, min_rows: int = MIN_SAMPLES) -> Samples:
    """Read and check a samples CSV; any problem raises one :class:`HwnasError` line."""
    dspace = space if isinstance(space, DeviceSpace) else device_space(space)
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise HwnasError(f"samples file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HwnasError(f"cannot read samples file {path}: {err}") from None
    allowed = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
    if not rows:
        raise HwnasError(f"{path}: empty file; expected a header with columns {allowed}")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        problem = f"missing column(s) {', '.join(missing)}" if missing else f"unknown column(s) {', '.join(unknown)}"
        raise HwnasError(f"{path}: {problem}; allowed columns: {allowed} (arch and latency_ms required)")
    if len(set(header)) != len(header):
        raise HwnasError(f"{path}: a column appears twice in the header")
    body = [(i, r) for i, r in enumerate(rows[1:], start=2) if any(cell.strip() for cell in r)]
    if len(body) < min_rows:
        raise HwnasError(f"{path}: {len(body)} sample row(s); at least {min_rows} are needed "
                         f"(10 recommended: 'hwnas devices refs --space {dspace.name}')")
    archs, genomes, values = [], [], {c: [] for c in header if c != "arch"}
    first_row: Dict[bytes, int] = {}
    for line, row in body:
        where = f"{path}: row {line}"
        if len(row) != len(header):
            raise HwnasError(f"{where}: {len(row)} fields, the header has {len(header)}")
        cells = dict(zip(header, (c.strip() for c in row)))
        try:
            genome = dspace.parse_arch(cells["arch"])
        except HwnasError as err:
            raise HwnasError(f"{where}: column arch: unknown architecture ({err}); allowed: {dspace.arch_help}") \
                from None
        key = np.asarray(genome, dtype=np.int64).tobytes()
        if key in first_row:
            raise HwnasError(f"{where}: column arch: duplicate of row {first_row[key]}; each architecture once")
        first_row[key] = line
        for column in values:
            values[column].append(_number(cells[column], where, column))
        archs.append(cells["arch"])
        genomes.append(genome)
    return Samples(dspace.name, archs, np.stack(genomes).astype(np.int64),
                   {c: np.asarray(v, dtype=float) for c, v in values.items()}, path)


#: Rows a cost model fits on at most. The few-shot fit's cost grows steeply with the rows (on 2 shared
#: cores: 10 rows 0.4 s, 30 rows 0.7 s, 60 rows 1.5 s, 200 rows 240 s; 10,000 rows needed 126 GiB), and
#: ``devices add`` refits once per row for its leave-one-out check; the meta-learned prior needs few.
MAX_FIT_SAMPLES = 30


def fit_samples(samples: Samples, max_rows: int = MAX_FIT_SAMPLES) -> Samples:
    """``samples``, or a seeded spread subset of ``max_rows`` of them (the first rows, which
    ``hwnas devices refs`` puts first as the reference architectures, always kept)."""
    if len(samples) <= max_rows:
        return samples
    keep_first = min(10, max_rows)
    rng = np.random.default_rng(0)
    rest = np.sort(rng.choice(np.arange(keep_first, len(samples)), max_rows - keep_first, replace=False))
    rows = np.concatenate([np.arange(keep_first), rest])
    return Samples(samples.space, [samples.archs[i] for i in rows], samples.genomes[rows],
                   {m: v[rows] for m, v in samples.values.items()}, samples.path)


def write_samples(path: os.PathLike, samples: Samples) -> None:
    columns = ["arch"] + [c for c in ("latency_ms",) + OPTIONAL_COLUMNS if c in samples.values]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for i, arch in enumerate(samples.archs):
            writer.writerow([arch] + [f"{samples.values[c][i]:.6g}" for c in columns[1:]])


# --------------------------------------------------------------------------- profiles
def _load_profile(folder: Path, shipped: bool) -> DeviceProfile:
    path = folder / PROFILE_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(path, "", f"cannot read device profile: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "a device profile must be a mapping of keys")
    try:
        spec = DeviceSpec(**data)
    except ValidationError as err:
        e = err.errors()[0]
        raise ConfigError(path, ".".join(str(p) for p in e["loc"]), e["msg"]) from None
    if spec.name != folder.name:
        raise ConfigError(path, "name", f"{spec.name!r} differs from the folder name {folder.name!r}")
    return DeviceProfile(spec, folder, shipped)


def _folders(root: Path) -> List[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / PROFILE_FILE).is_file() and not p.name.startswith((".", "_")))


def list_devices(home: Optional[os.PathLike] = None) -> List[DeviceProfile]:
    """All profiles, user ones first shadowing shipped ones of the same name, sorted by name."""
    found: Dict[str, DeviceProfile] = {}
    for folder in _folders(SHIPPED_DIR):
        found[folder.name] = _load_profile(folder, shipped=True)
    for folder in _folders(devices_home(home)):
        found[folder.name] = _load_profile(folder, shipped=False)
    return [found[n] for n in sorted(found)]


def get_device(name: str, home: Optional[os.PathLike] = None) -> DeviceProfile:
    for root, shipped in ((devices_home(home), False), (SHIPPED_DIR, True)):
        if NAME_PATTERN.fullmatch(name or "") and (root / name / PROFILE_FILE).is_file():
            return _load_profile(root / name, shipped)
    known = ", ".join(p.name for p in list_devices(home)) or "(none)"
    raise HwnasError(f"unknown device {name!r}; known: {known} (home: {devices_home(home)})")


def find_device(name: str, home: Optional[os.PathLike] = None) -> Optional[DeviceProfile]:
    try:
        return get_device(name, home)
    except HwnasError:
        return None


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise HwnasError(f"invalid device name {name!r}; allowed: letters, digits, '_', '.', '-' "
                         "(starting with a letter or digit)")
    return name


def save_device(spec: DeviceSpec, files: Dict[str, object], home: Optional[os.PathLike] = None,
                base: Optional[DeviceProfile] = None, check=None) -> DeviceProfile:
    """Write profile ``spec`` with ``files`` (name -> Samples | str | bytes) atomically.

    ``base``: an existing profile whose other files are kept (a user profile made from a
    shipped one keeps the shipped samples of the other spaces). ``check``: called with the
    staged profile before it replaces anything (raising keeps the registry as it was).
    """
    root = devices_home(home)
    root.mkdir(parents=True, exist_ok=True)
    target = root / check_name(spec.name)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.name}-", dir=root))
    try:
        if base is not None:
            shutil.copytree(base.path, staging, dirs_exist_ok=True)
        for filename, content in files.items():
            if isinstance(content, Samples):
                write_samples(staging / filename, content)
            elif isinstance(content, bytes):
                (staging / filename).write_bytes(content)
            else:
                (staging / filename).write_text(str(content))
        data = spec.model_dump(exclude_none=True)
        (staging / PROFILE_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
        _load_profile_as(staging, spec.name)  # what was written must read back
        if check is not None:
            check(DeviceProfile(spec, staging, shipped=False))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{spec.name}-", dir=root))
            os.replace(target, old / "profile")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return _load_profile(target, shipped=False)


def _load_profile_as(folder: Path, name: str) -> None:
    """Check a staged folder (named ``.tmp-...``) as if it were ``name``."""
    data = yaml.safe_load((folder / PROFILE_FILE).read_text())
    DeviceSpec(**data)
    if data.get("name") != name:
        raise HwnasError(f"internal: staged profile name {data.get('name')!r} != {name!r}")


def add_device(name: str, space: str, samples_file: os.PathLike, *, hardware: Optional[str] = None,
               kind: Optional[str] = None, force: bool = False, home: Optional[os.PathLike] = None,
               **settings) -> DeviceProfile:
    """Add (or with ``force`` replace) a device's samples for ``space`` from a CSV.

    A new device gets a profile from ``hardware``/``kind``/``settings``; an existing one
    (user or shipped) keeps its profile and its other spaces' samples.
    """
    check_name(name)
    dspace = device_space(space)
    samples = read_samples(samples_file, dspace)
    existing = find_device(name, home)
    if existing is not None and existing.has_space(dspace.name) and not force:
        where = "shipped" if existing.shipped else str(existing.path)
        raise HwnasError(f"device {name!r} already has samples for {dspace.name} ({where}); "
                         "use --force to replace them")
    fields = existing.spec.model_dump() if existing is not None else {"name": name}
    fields.update({k: v for k, v in dict(hardware=hardware, kind=kind, **settings).items() if v is not None})
    fields["spaces"] = {**fields.get("spaces", {}), dspace.slug: dspace.name}
    if existing is not None and existing.shipped:
        fields["labels"] = [label for label in fields.get("labels", []) if label != "shipped"]
    try:
        spec = DeviceSpec(**fields)
    except ValidationError as err:
        e = err.errors()[0]
        raise HwnasError(f"device {name!r}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}") from None
    files: Dict[str, object] = {f"samples-{dspace.slug}.csv": samples}
    return save_device(spec, files, home, base=existing, check=lambda staged: _check_fits(staged, dspace.name))


def _check_fits(profile: DeviceProfile, space: str) -> None:
    """The profile's cost model fits and predicts its own samples, before the profile is registered."""
    from .predictors import cost_model

    try:
        model = cost_model(profile, space)
        model.predict(model.samples.genomes[:1] if model.samples is not None else model.dspace.space.smallest()[None])
    except MemoryError:
        raise HwnasError(f"device {profile.name!r}: fitting the predictor on {space} ran out of memory; "
                         f"nothing was added") from None
    except HwnasError as err:
        raise HwnasError(f"device {profile.name!r}: the predictor does not fit its samples ({err}); "
                         f"nothing was added") from None


def remove_device(name: str, home: Optional[os.PathLike] = None) -> Path:
    profile = get_device(name, home)
    if profile.shipped:
        raise HwnasError(f"device {name!r} is a shipped profile (read-only); only user profiles in "
                         f"{devices_home(home)} can be removed")
    root = devices_home(home)
    trash = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=root))
    os.replace(profile.path, trash / "profile")
    shutil.rmtree(trash, ignore_errors=True)
    return profile.path
