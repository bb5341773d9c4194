"""Named crash points, so the SIGKILL-and-resume tests kill a real run at an exact moment.

``HWNAS_KILL_AT=NAME`` (or ``NAME#N``: the N-th time) makes the process SIGKILL itself when
it passes :func:`point` ``NAME``. Unset (always, outside the tests), a point is one
environment lookup. The points are listed in docs/RELIABILITY.md.
"""

from __future__ import annotations

import os
import signal
from typing import Dict

_passed: Dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get("HWNAS_KILL_AT")
    if not spec:
        return
    target, _, nth = spec.partition("#")
    if target != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
