"""Devices: profiles with measured samples, measurement backends, and per-device cost models.

    from hwnas.devices import cost_model
    model = cost_model("pixel3", "nb201")            # or a user device, a supernet space
    model.predict(genomes)                            # {"latency_ms": array, ...}
    model.labels                                      # {"latency_ms": "fitted", "energy_mJ": "estimated", ...}

Modules: :mod:`.registry` (profiles on disk), :mod:`.spaces` (architectures per space),
:mod:`.predictors` (cost models), :mod:`.lut` (supernet lookup tables), :mod:`.measure`
(``hwnas devices measure``, local or on a Ray node), :mod:`.backends` (timing),
:mod:`.energy` (analytical energy estimate). Imports are lazy so that importing the
backends alone stays light.
"""

from importlib import import_module

_EXPORTS = {
    "cost_model": "predictors", "CostModel": "predictors",
    "get_device": "registry", "list_devices": "registry", "add_device": "registry", "remove_device": "registry",
    "devices_home": "registry", "DeviceProfile": "registry",
    "device_space": "spaces", "measure_device": "measure", "create_backend": "backends", "BACKENDS": "backends",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
