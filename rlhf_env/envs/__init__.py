"""One module per environment family; each declares the ids it registers.

A module's ``REGISTER`` is a literal list of ``{"id", "entry_point", "kwargs",
"description"}`` entries. :func:`builtin_envs` reads them from the modules' source (an
``ast`` walk, without importing the modules, so ``import rlhf_env`` stays light), and
``rlhf_env`` registers them: adding an env to the package is one new module here.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

__all__ = ["builtin_envs"]


def builtin_envs() -> list[dict[str, Any]]:
    """The ``REGISTER`` entries of every module of this package, in module-name order."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "REGISTER" for t in node.targets):
                out.extend(ast.literal_eval(node.value))
    return out
