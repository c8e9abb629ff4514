"""Convergence: cloud, LLM and SaaS usage into cost data in BigQuery.

One import package. The repository keeps consumer/, publisher/, processors/, schemas/ and configs/ at its
root; they install as `convergence.consumer` and so on. From a checkout those folders would also import
under their bare names, giving a second copy of every module (two registries, two metric sets, patches
that miss). `_SecondNameGuard` refuses the bare names when they resolve to our own folders; a package of
the same name from elsewhere still imports.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

MAPPED_PACKAGES = ("consumer", "publisher", "processors", "schemas", "configs")


class _SecondNameGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if path is not None or fullname not in MAPPED_PACKAGES:
            return None
        bare = importlib.machinery.PathFinder.find_spec(fullname)
        canonical = importlib.util.find_spec(f"{__name__}.{fullname}")
        if bare is None or canonical is None or not bare.origin or not canonical.origin:
            return None
        if Path(bare.origin).resolve() == Path(canonical.origin).resolve():
            raise ImportError(f"import {__name__}.{fullname}, not {fullname}: one module must not load under two "
                              "names", name=fullname)
        return None


if not any(isinstance(finder, _SecondNameGuard) for finder in sys.meta_path):
    sys.meta_path.insert(0, _SecondNameGuard())
