"""The package's exception types.

Every error a user can cause (a bad id or keyword, a malformed action, an
exhausted budget, malformed data) raises one of these, with a message that
names the offending value and says what would be valid. Each also derives
from the closest built-in type, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "RLHFEnvError",
    "UnknownEnvError",
    "InvalidKwargError",
    "InvalidArgumentError",
    "InvalidActionError",
    "QueryBudgetExceeded",
    "DataError",
    "PrivilegedAttributeError",
    "MissingDependencyError",
    "closest",
]


class RLHFEnvError(Exception):
    """Base class of every error raised by ``rlhf_env``."""


class UnknownEnvError(RLHFEnvError, LookupError):
    """An environment id that is not registered."""


class InvalidKwargError(RLHFEnvError, TypeError):
    """A keyword argument that the constructor does not take."""


class InvalidArgumentError(RLHFEnvError, ValueError):
    """A keyword argument with a value of the wrong type or out of range."""


class InvalidActionError(RLHFEnvError, ValueError):
    """An action that is not valid for the environment (wrong type, unknown response)."""


class QueryBudgetExceeded(RLHFEnvError, RuntimeError):
    """A step asked the oracle for more preferences than the query budget has left."""

    def __init__(self, used: int, budget: int, requested: int) -> None:
        self.used, self.budget, self.requested = used, budget, requested
        super().__init__(
            f"query budget exceeded: {used} of {budget} queries used, "
            f"{requested} more requested ({budget - used} left). Nothing was counted for "
            "this call; make the env with a larger `query_budget` or stop stepping."
        )

    def __reduce__(self) -> tuple:  # picklable, e.g. from an oracle service in another process
        return type(self), (self.used, self.budget, self.requested)


class DataError(RLHFEnvError, ValueError):
    """Malformed data: a file, row or value that cannot be parsed."""


class PrivilegedAttributeError(RLHFEnvError, AttributeError):
    """An env was asked for what only the judge knows (the gold reward, theta*, pi*)."""


class MissingDependencyError(RLHFEnvError, ImportError):
    """An optional dependency (an extra such as ``[lora]`` or ``[smollm2]``) is not installed;
    the message names the pip command that installs it."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" Did you mean ...?"`` suffix naming the closest ``choices`` (or "")."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
