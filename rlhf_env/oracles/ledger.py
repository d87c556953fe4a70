"""The query ledger: every oracle call of a problem instance is charged here, once.

A charge is reserved before the oracle runs and recorded only once it has
returned, so a failing call costs nothing and no call escapes the count. The
ledger is thread-safe: concurrent charges either fit in the budget together or
the one that does not fit raises :class:`~rlhf_env.errors.QueryBudgetExceeded`
(counting nothing). Its counters are read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from rlhf_env.errors import InvalidArgumentError, QueryBudgetExceeded

__all__ = ["QueryLedger"]


class QueryLedger:
    """Counts oracle queries against a budget (in memory).

    Args:
        budget: the number of queries allowed (0 for the offline setting).
    """

    def __init__(self, budget: int) -> None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
            raise InvalidArgumentError(
                f"query_budget must be a non-negative integer, got {budget!r}")
        self._budget = int(budget)
        self._used = 0
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        """The number of queries allowed."""
        return self._budget

    @property
    def used(self) -> int:
        """Queries answered so far."""
        return self._used

    @property
    def left(self) -> int:
        """Queries that can still be made."""
        return self._budget - self._used

    @contextmanager
    def charge(self, n: int) -> Iterator[None]:
        """Reserve ``n`` queries for the body of the ``with`` block.

        Raises :class:`QueryBudgetExceeded` (counting nothing) when fewer than ``n`` are
        left once the queries other threads have reserved are set aside. The queries
        are recorded only if the block completes; if it raises, nothing is counted.
        """
        with self._lock:
            if self._used + self._pending + n > self._budget:
                raise QueryBudgetExceeded(self._used + self._pending, self._budget, n)
            self._pending += n
        try:
            yield
        except BaseException:
            with self._lock:
                self._pending -= n
            raise
        with self._lock:
            self._pending -= n
            self._used += n

    def __deepcopy__(self, memo: dict) -> QueryLedger:
        return self  # a copy of an env is another view of the same instance: one ledger

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError(
            "a query ledger cannot be pickled: a copy in another process would hold its own "
            "budget. Make the env in that process with rlhf_env.make (or share an oracle "
            "service).")

    def __repr__(self) -> str:
        return f"QueryLedger(used={self._used}, budget={self._budget})"
