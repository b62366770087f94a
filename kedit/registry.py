"""Name → class registries filled by class decorators at import time (methods, edit kinds, swap modules).

A registry is the one kind of process-wide table kedit keeps: what is *available*, written once
per class when its module is imported and read everywhere else. Holding no results or models, it
does not make runs depend on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from kedit.errors import KeditError


class Registry:
    """Classes by name; :meth:`register` is a class decorator that also sets ``cls.<attribute> = name``."""

    def __init__(self, what: str, attribute: str) -> None:
        self.what = what  # "method", "edit kind", ...: for messages
        self.attribute = attribute
        self.classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def decorate(cls: type) -> type:
            if name in self.classes and self.classes[name] is not cls:
                raise KeditError(f"two {self.what}s are registered as {name!r}")
            setattr(cls, self.attribute, name)
            self.classes[name] = cls
            return cls
        return decorate

    def view(self) -> Mapping[str, type]:
        """Read-only view of the registered classes."""
        return MappingProxyType(self.classes)
