"""One module per agent; importing this package imports them all, which registers them.

A new agent is one module here (found automatically: no list to edit) whose class is
decorated with ``@register_agent("name")``, plus its hyperparameters in
``zoo_configs/<name>.yml``.
"""

import importlib
import pkgutil

__all__: list[str] = []

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
        __all__.append(_module.name)
