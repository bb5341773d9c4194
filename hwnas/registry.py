"""A tiny name -> factory registry (timm's ``register_model`` / ``create_model`` shape)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from .errors import HwnasError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: Dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None):
        """Decorator: ``@REGISTRY.register("name")`` (defaults to the function's name)."""

        def wrap(factory):
            key = name or factory.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._factories[key] = factory
            return factory

        return wrap

    def names(self) -> List[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._factories[name]
        except KeyError:
            raise HwnasError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}"
            ) from None

    def create(self, name: str, **kwargs) -> Any:
        return self.get(name)(**kwargs)


class NamesHelp:
    """A ``--help`` text that names what a registry holds, looked up only when help is printed.

    The registries live in modules that import torch; building every parser with their names
    would make each ``hwnas`` command pay for it. ``text`` holds ``{names}``; ``names()`` lists them.
    """

    def __init__(self, text: str, names: Callable[[], List[str]]):
        self.text, self.names = text, names

    def __str__(self) -> str:
        return self.text.format(names=", ".join(self.names()))

    def __mod__(self, params):  # argparse expands help with `help % params`
        return str(self) % params

    def __contains__(self, part) -> bool:
        return part in self.text

    def strip(self) -> str:
        return str(self).strip()

    def __bool__(self) -> bool:
        return True
