"""Great Expectations imported with only what keiko's suites need: pandas frames, nothing else.

`import great_expectations` (1.24) imports every expectation, metric, data source and renderer; no setting
or environment variable of GE's turns that off (its source reads only GX_ANALYTICS_ENABLED and GX_HOME).
Two parts of it are not needed to validate pandas frames:

- the optional back ends GE probes for its SQL and cloud data sources (`HIDDEN`): hidden while GE
  imports, so GE sees them as not installed, a configuration it supports (they are extras of its
  package). They are not hidden afterwards: keiko's SQL registry or S3 store can still import them.
- `scipy.stats` and `altair` (`DEFERRED`), which three expectation modules import at module level but use
  only when they run (KL divergence, KS tests) or render (the KL chart): each stands in as a module that
  becomes the real one at its first attribute use.

Installed by keiko.gates, so it takes effect whenever a gate imports GE, however it does; the import is
timed as the phase `import great_expectations` (keiko.phases).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

from keiko.phases import phase

HIDDEN = ("sqlalchemy", "boto3", "botocore", "pyathena", "psycopg2", "trino")
DEFERRED = ("scipy.stats", "altair")
PACKAGE = "great_expectations"


class Deferred(types.ModuleType):
    """Stands in for module `name` until an attribute is first asked for, then loads it and becomes it."""

    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attribute)


def defer(name: str) -> None:
    if name in sys.modules:
        return
    stand_in = Deferred(name)
    stand_in.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:  # `from scipy import stats` reads the attribute before it looks in sys.modules
        setattr(importlib.import_module(parent), child, stand_in)


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        hidden = [name for name in HIDDEN if name not in sys.modules]
        sys.modules.update(dict.fromkeys(hidden))  # None: "import x" raises ImportError
        for name in DEFERRED:
            defer(name)
        try:
            with phase("import great_expectations"):
                self.loader.exec_module(module)
        finally:
            for name in hidden:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]
            module.__loader__ = module.__spec__.loader = self.loader  # GE's templates are found through it
        skip_batch_fingerprints()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != PACKAGE:
            return None
        uninstall()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


_FINDER = _Finder()


def install() -> None:
    """From now on, the first `import great_expectations` of this process is lean."""
    if PACKAGE not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def skip_batch_fingerprints() -> None:
    """GE hashes every row of each pandas batch under 1 GB for a batch marker ("pandas_data_fingerprint")
    that nothing reads here: seconds per gate at 1M rows a day. Its threshold is a module constant."""
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
