"""Package exports that import their module on first use (PEP 562), so that importing a light
module of a package (`sentune.train.encoders`, `sentune.serve.predict`) does not import the
package's heavy ones (torch, pandas, transformers' modeling code). The ground floor: it imports
nothing of sentune."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, public: dict[str, str]) -> Callable[[str], Any]:
    """The `__getattr__` of `package` whose public names are `public` (name → the submodule
    that defines it); a name is imported once, then kept in the package's namespace."""

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{public[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
