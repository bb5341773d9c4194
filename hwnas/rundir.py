"""Run folders: where a run may go, who holds it, and what ``resume`` may continue.

A run folder holds ``config.yaml`` (the file as given), ``results.sqlite`` and ``run.lock``.

* **Checked before anything is made** (:func:`plan_run_dir`, also by ``hwnas validate``): the
  folder is not a file, not under a file, its name fits the file system, and its parent can
  be written. A run name is made safe for a folder name (``../../x`` stays inside ``runs/``).
* **Locked** (:class:`RunLock`): ``run.lock`` records the owner's PID and host and is held
  with ``flock`` for the run's lifetime, so a second ``run``/``resume`` of the folder is
  refused in one line; the kernel drops the lock when its owner dies, so a lock left by a
  killed run is stale and taken over.
* **Reusable until the run really started**: a folder holding only run files and no stored
  value (a run killed while starting, a cluster that could not be reached at the first
  measurement) is started afresh by ``run``; ``resume`` starts it too.
* **Checked before a resume**: the store's integrity and schema version, and that
  ``config.yaml`` still says what the store was built from (the changed keys are named).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .config import ExperimentConfig, load_config, parse_config, read_yaml, resolve_paths
from .errors import ConfigError, HwnasError
from .faults import point
from .store import ResultsStore, check_store, count_values

CONFIG_NAME = "config.yaml"
STORE_NAME = "results.sqlite"
LOCK_NAME = "run.lock"
#: What a run writes into its folder (the store with SQLite's WAL files); anything else is the user's.
NAME_MAX, PATH_MAX = 255, 4096  # Linux and macOS file systems
RUN_FILES = (CONFIG_NAME, STORE_NAME, STORE_NAME + "-wal", STORE_NAME + "-shm", STORE_NAME + "-journal", LOCK_NAME)


# --- where a run may go ---------------------------------------------------------------------
def safe_name(name: str) -> str:
    """A run name as one folder name: path separators and odd characters become '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "run"


def default_run_dir(cfg: ExperimentConfig) -> Path:
    return Path("runs") / f"{safe_name(cfg.name)}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_output_path(path: Path, what: str, folder: bool) -> Path:
    """``path`` can be made (a folder, or a file with ``folder=False``) without touching anything.

    ``what`` names the option or key in the message. Refused: a file where a folder must go
    (or the reverse), a path under a file, a name longer than the file system allows, a
    parent that cannot be written.
    """
    path = Path(path)
    if str(path).strip() == "":
        raise HwnasError(f"{what}: an empty path; give a {'folder' if folder else 'file'}")
    for part in path.parts:  # before any stat(), which fails on such a name
        if len(os.fsencode(part)) > NAME_MAX:
            raise HwnasError(f"{what}: the name {part[:24]}... is {len(os.fsencode(part))} bytes; a file or "
                             f"folder name may have at most {NAME_MAX}")
    if len(os.fsencode(str(path.absolute()))) >= PATH_MAX:
        raise HwnasError(f"{what}: the path is longer than the {PATH_MAX} bytes a path may have")
    if path.exists():
        if folder and not path.is_dir():
            raise HwnasError(f"{what}: {path} is a file, not a folder; choose another path")
        if not folder and path.is_dir():
            raise HwnasError(f"{what}: {path} is a folder; give a file name")
    if path.exists():  # an existing file is overwritten (atomically, by the caller): its folder must be writable
        existing = path if folder else path.absolute().parent
    else:
        existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise HwnasError(f"{what}: {existing} is a file, so {path} cannot be made under it; choose another path")
    if not folder and not path.exists() and existing != path.absolute().parent:
        raise HwnasError(f"{what}: folder {path.parent} does not exist; create it first or give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HwnasError(f"{what}: cannot write in {existing} (permission denied); choose another path")
    return path


def plan_run_dir(cfg: ExperimentConfig, config_path: Path, out: Optional[Path]) -> Path:
    """The run folder ``run`` would use, checked (nothing is created): ``--out``, else the file's
    ``output``, else ``runs/<name>-<time>``."""
    if out is not None:
        run_dir = check_output_path(Path(out), "--out", folder=True)
        _check_reusable(run_dir)
        return run_dir
    run_dir = Path(cfg.output) if cfg.output is not None else default_run_dir(cfg)
    try:
        check_output_path(run_dir, "output", folder=True)
        _check_reusable(run_dir)
    except HwnasError as err:  # the file chose the folder: name the file and its key
        reason = str(err).partition("output: ")[2] or str(err)
        unset = "" if cfg.output is not None else f"(not set, so {run_dir}) "
        raise ConfigError(config_path, "output", unset + reason) from None
    return run_dir


def _check_reusable(run_dir: Path) -> None:
    """Refuse a folder that holds a run, or files that are not a run's."""
    if not run_dir.is_dir():
        return
    names = {p.name for p in run_dir.iterdir()}
    if STORE_NAME in names:
        check_store(run_dir / STORE_NAME)
        if count_values(run_dir / STORE_NAME) > 0:
            raise HwnasError(f"{run_dir}: already holds a run; use 'hwnas resume {run_dir}' or choose another folder")
    if names - set(RUN_FILES):
        raise HwnasError(f"{run_dir}: folder exists and holds other files "
                         f"({', '.join(sorted(names - set(RUN_FILES))[:3])}); choose another folder")


# --- who holds a folder ---------------------------------------------------------------------
class RunLock:
    """``run.lock`` in a run folder, held (``flock``) from before anything is written until the run ends.

    The file names the owner (PID, host, start time) for the refusal message. A lock file
    whose owner died holds no ``flock``: it is stale and is taken over.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise HwnasError(f"{self.path}: cannot lock the run folder: {err}") from None
                raise HwnasError(f"{self.run_dir}: in use by {self.owner()}; wait for it to end (a second run or "
                                 f"resume of one folder would mix their results)") from None
            # The holder may have removed the file between our open and our lock: lock the file in place.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.now().isoformat(timespec="seconds")}).encode() + b"\n")
        os.fsync(fd)
        self._fd = fd
        return self

    def owner(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info['pid']} on {info['host']} (since {info.get('started', '?')})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --- starting and resuming ------------------------------------------------------------------
# The folder a run's relative input paths are taken from (the experiment file's, or the current
# directory for a config given as a dict), in the store's meta: the copy in the run folder reads the
# same files wherever it is resumed or exported from. Runs from before it was recorded used the
# current directory.
CONFIG_BASE_META = "config_base"


def config_base(config_path: Path, base: Optional[Path] = None) -> Path:
    return Path(base if base is not None else Path(config_path).parent).resolve()


def stored_base(store_path: Path) -> Path:
    """The run's :data:`CONFIG_BASE_META` (the current directory for a run from before it, or none yet)."""
    base = None
    if Path(store_path).exists():
        store = ResultsStore(store_path, readonly=True)
        try:
            base = store.get_meta(CONFIG_BASE_META)
        finally:
            store.close()
    return Path(base) if base else Path.cwd()


def config_record(config_path: Path, base: Path) -> Dict[str, Any]:
    """What the store keeps of the validated file: its text, hash and values (defaults filled in)."""
    text = Path(config_path).read_bytes()
    values = parse_config(resolve_paths(read_yaml(config_path), base), config_path).model_dump(mode="json")
    return {"sha256": hashlib.sha256(text).hexdigest(), "values": values}


def start_run_dir(run_dir: Path, config_path: Path, base: Optional[Path] = None) -> Tuple[RunLock, bool]:
    """Make ``run_dir`` (planned by :func:`plan_run_dir`), lock it, copy the file in and create the store.

    ``base``: where the file's relative input paths are taken from (default: the file's folder).

    Returns the held lock and whether the folder was made here (so a run that fails before
    its first value can remove what it made). A folder left by a run that never
    started is cleared and reused.
    """
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    point("folder-created")
    lock = RunLock(run_dir)
    try:
        lock.acquire()
        _check_reusable(run_dir)  # again, now that we hold it
        for name in RUN_FILES:
            if name != LOCK_NAME:
                (run_dir / name).unlink(missing_ok=True)
        base = config_base(config_path, base)
        record = config_record(config_path, base)
        partial = run_dir / f".{CONFIG_NAME}.partial"
        shutil.copyfile(config_path, partial)
        os.replace(partial, run_dir / CONFIG_NAME)
        point("config-written")
        store = ResultsStore(run_dir / STORE_NAME)
        try:
            store.set_meta("config", record)
            store.set_meta(CONFIG_BASE_META, str(base))
        finally:
            store.close()
        point("store-created")
    except BaseException:
        lock.release()
        if created:
            remove_unstarted(run_dir)
        raise
    return lock, created


def remove_unstarted(run_dir: Path) -> None:
    """Remove a folder this invocation made if no value reached its store (nothing to lose)."""
    store = run_dir / STORE_NAME
    try:
        if store.exists() and count_values(store) > 0:
            return
    except Exception:  # an unreadable store is left for the user to look at
        return
    if {p.name for p in run_dir.iterdir()} <= set(RUN_FILES):
        shutil.rmtree(run_dir, ignore_errors=True)


# The backend a device block without one got when its run started (onnxruntime-cpu since the
# compression dimensions; torch-cpu before), in the store's meta: a resumed run keeps timing one way.
DEFAULT_BACKEND_META, OLD_DEFAULT_BACKEND = "default_backend", "torch-cpu"


def keep_default_backend(cfg: ExperimentConfig, store: ResultsStore) -> ExperimentConfig:
    """Device blocks without a backend get the one their run began with (a store with candidates but
    no record of it is from before the onnxruntime default: torch-cpu)."""
    default = store.get_meta(DEFAULT_BACKEND_META)
    if default is None and not store.candidates():
        return cfg
    default = default or OLD_DEFAULT_BACKEND
    devices = [d if "backend" in d.model_fields_set else d.model_copy(update={"backend": default})
               for d in cfg.devices]
    return cfg.model_copy(update={"devices": devices})


def resume_run_dir(run_dir: Path) -> Tuple[ExperimentConfig, RunLock]:
    """Lock ``run_dir`` and check it can be continued; the validated config and the held lock.

    A folder whose run never reached its store (killed while starting) starts now.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / CONFIG_NAME).is_file():
        raise HwnasError(f"{run_dir}: not a run folder (needs {CONFIG_NAME} and {STORE_NAME})")
    lock = RunLock(run_dir).acquire()
    try:
        store_path = run_dir / STORE_NAME
        if store_path.exists():
            check_store(store_path)
        base = stored_base(store_path)
        cfg = load_config(run_dir / CONFIG_NAME, base=base)
        record = config_record(run_dir / CONFIG_NAME, base)
        store = ResultsStore(store_path)
        try:
            stored = store.get_meta("config")
            if stored is None:  # a run from before configs were recorded, or one killed before it: keep it now
                store.set_meta("config", record)
            elif stored["values"] != record["values"]:
                changed = changed_keys(stored["values"], record["values"])
                raise ConfigError(run_dir / CONFIG_NAME, changed[0],
                                  f"edited since the run started (changed: {', '.join(changed[:6])}"
                                  f"{', ...' if len(changed) > 6 else ''}); a resume continues the search it "
                                  f"stored: restore the file, or run the edited file into a new folder")
            cfg = keep_default_backend(cfg, store)
        finally:
            store.close()
    except BaseException:
        lock.release()
        raise
    return cfg, lock


def changed_keys(old: Any, new: Any, prefix: str = "") -> List[str]:
    """Dotted key paths where two config dumps differ (``strategy.population``, ``budgets[0]``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out += changed_keys(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [k for i, (a, b) in enumerate(zip(old, new)) for k in changed_keys(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [prefix or "(the whole file)"]


@contextmanager
def holding(lock: RunLock, run_dir: Path, created: bool):
    """Run inside ``with holding(...)``: the lock is released at the end, and a run that fails before
    its first value removes the folder this invocation made (nothing in it to lose)."""
    try:
        yield
    except HwnasError:
        lock.release()
        if created:
            remove_unstarted(run_dir)
        raise
    finally:
        lock.release()
