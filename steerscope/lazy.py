"""Names a package exports but imports only on first use (PEP 562 module `__getattr__`), so
`import steerscope` stays at torch's cost and a module with a heavy dependency loads when needed."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package` that import `exports[name]` (a module) the first
    time `name` is read and keep the value in the package, so the next read is a plain lookup."""

    def __getattr__(name: str) -> Any:  # noqa: N807 (the PEP 562 hook's name)
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
