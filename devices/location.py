"""Where a device of an experiment is, which decides what a run may measure on it.

A device is *here* when its costs can be measured in this run: a backend on this machine,
the Ray node that holds the device's resource, or (on a benchmark table) a column of the
table. Otherwise it is *external*: a profile only (given samples, a lookup table measured
elsewhere, a fitted model), whose costs are predicted and never timed on this host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .registry import DeviceProfile, find_device


@dataclass(frozen=True)
class Location:
    here: bool
    where: str  # how its costs are measured (here) or why they can only be predicted (external)
    profile: Optional[DeviceProfile] = None

    @property
    def ray_resource(self) -> Optional[str]:
        return self.profile.spec.ray_resource if self.here and self.profile is not None else None


def locate(name: str, backend: str, table_devices: Optional[Sequence[str]] = None) -> Location:
    """Locate device ``name`` of an experiment whose device block gives ``backend``.

    ``table_devices``: the latency columns of the benchmark table on a table space
    (``None`` on a supernet space).
    """
    from .measure import profile_obstacle

    profile = find_device(name)
    if table_devices is not None:
        if name in table_devices:
            return Location(True, "its column of the benchmark table", profile)
        return Location(False, f"{name!r} is not a column of the benchmark table, so its costs come from its "
                               "profile's cost model", profile)
    if profile is None:
        return Location(True, f"this machine ({backend})")
    if profile.spec.ray_resource:
        return Location(True, f"the Ray node holding {profile.spec.ray_resource} ({profile.spec.backend})", profile)
    obstacle = profile_obstacle(profile.spec)
    if obstacle is None:
        return Location(True, f"this machine ({profile.spec.backend})", profile)
    return Location(False, f"{obstacle}, so its costs come from its profile's cost model", profile)
