"""Results store: one SQLite file per run recording every evaluated candidate.

Every objective value is stored with its source (``measured`` or ``predicted``), so a
candidate may hold both; the *effective* value prefers the measurement. Each write is
committed at once, so a killed run loses at most the candidate in flight, and
``hwnas resume`` never evaluates a stored candidate again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

from .errors import HwnasError
from .faults import point

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    genome TEXT NOT NULL,
    config TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objectives (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    name TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('measured', 'predicted')),
    value REAL NOT NULL,
    wall_time_s REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (candidate_id, name, source)
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    n_candidates INTEGER NOT NULL,
    finished_at REAL NOT NULL
);
"""


@dataclass
class Candidate:
    id: int
    key: str
    genome: List[int]
    config: Dict
    generation: int
    measured: Dict[str, float] = field(default_factory=dict)
    predicted: Dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0

    def value(self, name: str) -> Optional[float]:
        """Effective value: the measurement when there is one, else the prediction."""
        if name in self.measured:
            return self.measured[name]
        return self.predicted.get(name)

    def source(self, name: str) -> Optional[str]:
        if name in self.measured:
            return "measured"
        return "predicted" if name in self.predicted else None


#: Bumped whenever the tables change; a store from a newer hwnas is refused, not misread.
SCHEMA_VERSION = 1
TABLES = ("meta", "candidates", "objectives", "generations")
SQLITE_MAGIC = b"SQLite format 3\x00"


def _read_only(path: Path):
    """Open ``path`` read-only; returns (connection, cleanup). Reading a WAL database makes its
    ``-wal``/``-shm`` files: cleanup removes them again when they were not there and hold nothing."""
    side = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    absent = [p for p in side if not p.exists()]
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)

    def cleanup():
        db.close()
        wal = Path(f"{path}-wal")
        if wal in absent and (not wal.exists() or wal.stat().st_size == 0):
            for p in absent:
                p.unlink(missing_ok=True)
    return db, cleanup


def check_store(path) -> None:
    """A results store that ``resume`` may continue: SQLite, intact, our tables, a known schema.

    Raises one :class:`HwnasError` line otherwise; the file is opened read-only and left as it was.
    """
    path = Path(path)
    advice = "it cannot be resumed; start the search again in a new folder (hwnas run FILE --out NEW)"
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as err:
        raise HwnasError(f"{path}: cannot read the results store: {err}") from None
    if head != SQLITE_MAGIC:
        raise HwnasError(f"{path}: not an SQLite results store ({'empty file' if not head else 'other content'}); "
                         f"{advice}")
    cleanup = None
    try:
        db, cleanup = _read_only(path)
        problems = [r[0] for r in db.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise HwnasError(f"{path}: the results store is damaged ({problems[0]}); {advice}")
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in TABLES if t not in have]
        if missing:
            raise HwnasError(f"{path}: not an hwnas results store (no table {', '.join(missing)}); {advice}")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = json.loads(row[0]) if row else 1  # stores written before versions were recorded
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise HwnasError(f"{path}: results store schema version {version!r}; this hwnas reads up to "
                             f"{SCHEMA_VERSION} (a newer hwnas wrote it)")
    except sqlite3.DatabaseError as err:
        raise HwnasError(f"{path}: the results store is damaged ({err}); {advice}") from None
    finally:
        if cleanup is not None:
            cleanup()


def count_values(path) -> int:
    """Objective values in a store :func:`check_store` accepted (0: its run never evaluated anything:
    candidates without values are what a seeded replay proposes again, nothing is lost with them)."""
    db, cleanup = _read_only(Path(path))
    try:
        return int(db.execute("SELECT COUNT(*) FROM objectives").fetchone()[0])
    finally:
        cleanup()


class ResultsStore:
    def __init__(self, path):
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)
        except sqlite3.DatabaseError as err:
            raise HwnasError(f"{self.path}: cannot open the results store: {err}") from None

    def close(self):
        self._db.close()

    # --- meta ----------------------------------------------------------------------
    def set_meta(self, key: str, value) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # --- candidates -------------------------------------------------------------------
    def add_candidate(self, key: str, genome: Iterable[int], config: Dict, generation: int) -> int:
        """Insert a candidate if new; return its id (the existing one when already stored)."""
        row = self._db.execute("SELECT id FROM candidates WHERE key = ?", (key,)).fetchone()
        if row:
            return int(row[0])
        cur = self._db.execute(
            "INSERT INTO candidates (key, genome, config, generation, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, json.dumps([int(g) for g in genome]), json.dumps(config, default=_json_default),
             int(generation), time.time()),
        )
        point("candidate-added")
        return int(cur.lastrowid)

    def record(self, candidate_id: int, values: Dict[str, float], source: str, wall_time_s: float) -> None:
        """Store objective values of one candidate in one transaction.

        A value already stored with the same source is a bug in the caller (it would mean
        evaluating twice), so the primary key makes that fail loudly.
        """
        now = time.time()
        with self._db:  # one transaction: a kill leaves all or nothing
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO objectives VALUES (?, ?, ?, ?, ?, ?)",
                [(candidate_id, name, source, float(v), float(wall_time_s), now) for name, v in values.items()],
            )
        point("values-recorded")

    def record_generation(self, generation: int) -> None:
        n = self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        self._db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)", (generation, n, time.time()))
        point("generation-recorded")

    def finished_generations(self) -> List[int]:
        return [r[0] for r in self._db.execute("SELECT generation FROM generations ORDER BY generation")]

    def candidates(self, keys: Optional[Iterable[str]] = None) -> List[Candidate]:
        rows = self._db.execute(
            "SELECT id, key, genome, config, generation FROM candidates ORDER BY id").fetchall()
        by_id = {r[0]: Candidate(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows}
        calls = set()  # one record() call shares its wall time among its values
        for cid, name, source, value, wall, created in self._db.execute(
                "SELECT candidate_id, name, source, value, wall_time_s, created_at FROM objectives"):
            cand = by_id[cid]
            (cand.measured if source == "measured" else cand.predicted)[name] = value
            if (cid, source, created) not in calls:
                calls.add((cid, source, created))
                cand.wall_time_s += wall
        out = list(by_id.values())
        if keys is not None:
            wanted = set(keys)
            out = [c for c in out if c.key in wanted]
        return out

    def by_key(self) -> Dict[str, Candidate]:
        return {c.key: c for c in self.candidates()}

    def objective_rows(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM objectives").fetchone()[0])


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
