"""The closure registry.  Built in: `gonly` (the paper's G-only closure, kernel_eft.theory.gonly) and `exact`
(the O(1/n) theory of docs/exact_theory.md, kernel_eft.theory.exact); interface in kernel_eft.theory.closure.

Adding a closure is one place: a module in kernel_eft/theory/ whose CLOSURE is an instance of a Closure
subclass (found by itself, like gonly.py), or, from a notebook, `register_closure(MyClosure())`.  The CLI's
--closure choices, the workflow's config check and the diagnostics take the names from here, in the order of
the closures' `order` (then registration): the order of the theories in diagnostics files and figures.
"""

from __future__ import annotations

import dataclasses
import sys

from kernel_eft import schema
from kernel_eft.discovery import declared_in, folder_of, lookup
from kernel_eft.theory.closure import DEPTH_FORMS, STANDARD_FIELDS, Closure

__all__ = ["CLOSURES", "Closure", "DEPTH_FORMS", "STANDARD_FIELDS", "closure_names", "closure_parts",
           "document_tables", "get_closure", "reference_closure", "register_closure", "theory_labels"]

CLOSURES: dict[str, Closure] = {}



def register_closure(closure: Closure, replace: bool = False) -> Closure:
    """Add a closure to the registry (the CLI, the API, the workflow and the diagnostics then accept it)."""
    if not isinstance(closure, Closure) or not closure.name:
        raise TypeError("register_closure needs a Closure instance with a name")
    if closure.name in CLOSURES and not replace and CLOSURES[closure.name] is not closure:
        raise ValueError(f"closure {closure.name!r} is already registered (pass replace=True to replace it)")
    CLOSURES[closure.name] = closure
    ordered = sorted(CLOSURES.values(), key=lambda c: c.order)  # stable: registration order among equals
    CLOSURES.clear()
    CLOSURES.update((c.name, c) for c in ordered)
    return closure


def closure_names() -> list[str]:
    return list(CLOSURES)


def get_closure(name: str | Closure) -> Closure:
    return lookup(CLOSURES, "closure", name, Closure, closure_names())


def reference_closure() -> Closure:
    """The closure under test (the first with `reference = True`): the study measures its validity window
    (summary t*) and the t = 0 mismatch of its K1 source against Monte Carlo."""
    for closure in CLOSURES.values():
        if closure.reference:
            return closure
    raise LookupError("no registered closure is the reference (Closure.reference = True)")


def theory_labels() -> list[str]:
    """Every theory a diagnostics file can hold, in order: gonly_discrete, gonly_continuum, exact_discrete, ..."""
    return [closure.theory_label(depth) for closure in CLOSURES.values() for depth in (1, None)]


def closure_parts() -> dict:
    """{name: schema.Variable} of every registered closure's parts, each noted with the closure that writes it
    (a part two closures write is listed once, noted with both)."""
    parts, writers = {}, {}
    for closure in CLOSURES.values():
        for name, var in closure.parts.items():
            parts.setdefault(name, var)
            writers.setdefault(name, []).append(closure.name)
    return {name: dataclasses.replace(var, note=" ".join(filter(None, (
                f"only {' and '.join(writers[name])}", var.note.removeprefix("only ")))))
            for name, var in parts.items()}


def document_tables(path: str) -> bool:
    """Regenerate docs/data_format.md's tables: the schema's, with the registered closures' parts in the theory
    file's table.  True if anything changed."""
    return schema.update_document(path, {"theory": closure_parts()})


def _discover() -> None:
    """Register the CLOSURE of every module in kernel_eft/theory/."""
    for closure in declared_in(__package__, folder_of(__file__), "CLOSURE"):
        if isinstance(closure, Closure):
            register_closure(closure)


_discover()


if __name__ == "__main__":  # python -m kernel_eft.theory.registry docs/data_format.md
    for target in sys.argv[1:]:
        print(f"{target}: {'updated' if document_tables(target) else 'up to date'}")
