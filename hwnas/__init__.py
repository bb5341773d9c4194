"""hwnas: hardware-aware neural architecture search.

    import hwnas
    run = hwnas.run("experiments/quickstart.yaml", out="runs/qs")
    run.front()                      # a pandas DataFrame (pip install 'hwnas[pandas]')
    model = hwnas.load("models/best")  # a torch.nn.Module from `hwnas export ... --out models/best`

See docs/API.md. Names are imported on first use, so ``import hwnas`` stays light.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {"load_config": "api", "run": "api", "resume": "api", "load_run": "api", "Run": "api", "measure": "api",
            "load": "export", "HwnasError": "errors", "ConfigError": "errors"}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS) + ["__version__"]
