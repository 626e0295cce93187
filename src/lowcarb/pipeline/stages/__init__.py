"""Recipe stages. Every module in this folder is imported here, which registers its stages.

Adding a stage is adding a module (see docs/architecture.md, "pipeline"); nothing else changes.
A module that fails to import does not take the others down: its error is kept and shown when a
recipe names a stage that is missing (and `tests/pipeline/test_registry.py` fails on it).
"""

from __future__ import annotations

import importlib
import pkgutil

_IMPORT_ERRORS: dict[str, str] = {}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name.startswith("_"):
        continue
    _module = f"{__name__}.{_info.name}"
    try:
        importlib.import_module(_module)
    except Exception as exc:  # a broken technique module must not hide the working stages
        _IMPORT_ERRORS[_module] = f"{type(exc).__name__}: {exc}"


def import_errors() -> dict[str, str]:
    """Stage modules that failed to import, with their error."""
    return dict(_IMPORT_ERRORS)
