"""What the registries of activations, closures and figures share: finding the built-in ones by the modules
of their folder (so that adding one is adding a module), and looking one up by name."""

from __future__ import annotations

import importlib
import os
import pkgutil


def declared_in(package: str, folder: str, attribute: str) -> list:
    """The value of `attribute` in every module of `folder` (the directory of package `package`) that has it,
    modules in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules([folder]), key=lambda info: info.name):
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, attribute):
            found.append(getattr(module, attribute))
    return found


def folder_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def lookup(registry: dict, kind: str, item, cls, names: list):
    """The registered `kind` named item (an instance of cls is returned as it is); KeyError listing the names."""
    if isinstance(item, cls):
        return item
    try:
        return registry[item]
    except (KeyError, TypeError):
        raise KeyError(f"unknown {kind} {item!r}; choose one of {', '.join(names)}") from None
