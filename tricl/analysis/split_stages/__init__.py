"""Per-split analysis stages declared one module each, computed in both bases.

Every module of this package registers its stage with
:func:`tricl.analysis.image_stages.register_split_stage`; this package imports them all (like
:mod:`tricl.methods` does for methods) and :mod:`tricl.analysis.pipeline` imports this package, so a
new stage is its file (and its test) and the page section that draws it.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
