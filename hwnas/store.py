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


class ResultsStore:
    """``readonly``: open an existing store without writing to it (export, evaluate): a file that
    is not a results store is one clear line, and the run is left exactly as it was."""

    def __init__(self, path, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise HwnasError(f"{self.path}: no such results store")
            # Without pending WAL content, open it immutable: SQLite then creates no -wal/-shm files beside it.
            wal = self.path.with_name(self.path.name + "-wal")
            flags = "mode=ro" if wal.is_file() and wal.stat().st_size else "mode=ro&immutable=1"
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?{flags}", uri=True, isolation_level=None)
            try:
                tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.DatabaseError as err:
                self._db.close()
                raise HwnasError(f"{self.path}: not a results store ({err})") from None
            missing = sorted({"meta", "candidates", "objectives"} - tables)
            if missing:
                self._db.close()
                raise HwnasError(f"{self.path}: not a results store (no table {', '.join(missing)})")
            return
        self._db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

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

    def record_generation(self, generation: int) -> None:
        n = self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
        self._db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)", (generation, n, time.time()))

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
