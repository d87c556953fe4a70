"""The ``rlhf-zoo`` console script: check that ``agents`` is this project's zoo, then run it.

The agent zoo installs as the top-level module ``agents``, a name another widely
installed package also uses (the OpenAI Agents SDK, ``openai-agents``). When both are
installed in one environment, whichever was installed last overwrites the other's files,
and ``import agents`` gives one of them. This launcher looks the module up *without*
importing it and, if it is not the zoo, says so instead of failing with an obscure import
error. The fix is to keep rlhf-env in its own virtual environment.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

__all__ = ["zoo_module_problem", "zoo"]


def zoo_module_problem() -> str | None:
    """Why ``import agents`` would not give rlhf-env's zoo (None when it would)."""
    try:
        spec = importlib.util.find_spec("agents")
    except (ImportError, ValueError) as e:
        return f"the module 'agents' cannot be found ({e})"
    if spec is None or not spec.submodule_search_locations:
        return "no package named 'agents' is installed"
    folder = Path(next(iter(spec.submodule_search_locations)))
    if (folder / "zoo" / "cli.py").is_file() and (folder / "loop.py").is_file():
        return None
    return (f"the package 'agents' that Python finds ({folder}) is not rlhf-env's agent zoo: "
            "another package (for example the OpenAI Agents SDK, 'openai-agents') installs a "
            "top-level 'agents' too, and the two overwrite each other. Install rlhf-env in its "
            "own virtual environment.")


def zoo() -> None:
    """Entry point of ``rlhf-zoo``."""
    problem = zoo_module_problem()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    sys.exit(importlib.import_module("agents.zoo.cli").main())
