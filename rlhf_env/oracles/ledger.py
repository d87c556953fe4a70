"""Query ledgers: every oracle call of a problem instance is charged here, once.

The problem instance asks its oracle only through :meth:`QueryLedger.settle`:
the ledger reserves the batch's queries (refusing, with
:class:`~rlhf_env.errors.QueryBudgetExceeded` and counting nothing, a batch
that does not fit), lets the oracle answer, and only then records the
charge. A failing call costs nothing and no call escapes the count. Ledgers
are thread-safe: concurrent batches either fit in the budget together or the
one that does not fit raises. Their counters are read-only.

* :class:`QueryLedger` keeps the count in memory: what a bare ``rlhf_env.make``
  uses.
* :class:`DurableLedger` keeps a record in an SQLite database (a run folder's
  ``ledger.sqlite``): each answered batch — the prompts, the pairs, the
  answers, the oracle, the session, and the oracle's generator state after
  the call — is committed in the same transaction that charges the budget,
  before the answers return. The budget holds across sessions, and a batch
  identical to one answered in an earlier session is answered from the record
  (the generator restored to where that call left it) instead of being asked
  again: a resumed run never buys a label twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.errors import DataError, InvalidArgumentError, QueryBudgetExceeded

__all__ = ["QueryLedger", "DurableLedger", "batch_key"]

LABEL, SCORE = "label", "score"


def batch_key(kind: str, prompts: Sequence[str], *responses: Sequence[str]) -> str:
    """A digest of a query batch: its kind, prompts and responses, in order."""
    h = hashlib.sha256(kind.encode())
    for column in (prompts, *responses):
        for text in column:
            b = str(text).encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        h.update(b"\x00|")
    return h.hexdigest()


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

    def bind_budget(self, budget: int) -> None:
        """Check that this ledger was made for an env with ``budget`` queries."""
        if budget != self._budget:
            raise InvalidArgumentError(
                f"the ledger's budget is {self._budget} but the env's is {budget}")

    @property
    def used(self) -> int:
        """Queries answered so far (by every session, for a durable ledger)."""
        return self._used

    @property
    def left(self) -> int:
        """Queries that can still be paid for."""
        return self._budget - self._used

    @property
    def available(self) -> int:
        """Queries a run can still be answered: those left plus those a durable ledger can
        answer again from its record (none in memory)."""
        return self.left

    def _reserve(self, n: int) -> None:
        with self._lock:
            if self._used + self._pending + n > self._budget:
                raise QueryBudgetExceeded(self._used + self._pending, self._budget, n)
            self._pending += n

    def _release(self, n: int, answered: bool) -> None:
        with self._lock:
            self._pending -= n
            if answered:
                self._used += n

    @contextmanager
    def charge(self, n: int) -> Iterator[None]:
        """Reserve ``n`` queries for the body of the ``with`` block (in memory only).

        Raises :class:`QueryBudgetExceeded` (counting nothing) when fewer than ``n`` are
        left once the queries other threads have reserved are set aside. The queries are
        recorded only if the block completes; if it raises, nothing is counted.
        """
        self._reserve(n)
        try:
            yield
        except BaseException:
            self._release(n, answered=False)
            raise
        self._release(n, answered=True)

    def settle(self, kind: str, prompts: Sequence[str], responses: Sequence[Sequence[str]],
               ask: Callable[[], Any], rng: np.random.Generator | None = None,
               oracle: str = "") -> Any:
        """Charge a batch of ``len(prompts)`` queries and return ``ask()``'s answers.

        ``kind`` is ``"label"`` (``responses`` holds the two sides of each pair) or
        ``"score"`` (one side); ``rng`` is the generator the oracle draws from and
        ``oracle`` its name, for the record.
        """
        with self.charge(len(prompts)):
            return ask()

    def begin_session(self, **info: Any) -> int:
        """Start a session (a process working on the run); returns its id (0 in memory)."""
        return 0

    def end_session(self, status: str) -> None:
        """Close the current session with ``status`` (``done``, ``interrupted``, ...)."""

    def __deepcopy__(self, memo: dict) -> QueryLedger:
        return self  # a copy of an env is another view of the same instance: one ledger

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError(
            "a query ledger cannot be pickled: a copy in another process would hold its own "
            "budget. Make the env in that process with rlhf_env.make (or share an oracle "
            "service).")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(used={self._used}, budget={self._budget})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL, status TEXT NOT NULL,
    pid INTEGER, host TEXT, command TEXT);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY, session INTEGER NOT NULL REFERENCES sessions(id),
    kind TEXT NOT NULL, n INTEGER NOT NULL, key TEXT NOT NULL, oracle TEXT NOT NULL,
    answers TEXT NOT NULL, rng_state TEXT, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS queries (
    batch INTEGER NOT NULL REFERENCES batches(id), i INTEGER NOT NULL, prompt TEXT NOT NULL,
    response_1 TEXT NOT NULL, response_2 TEXT, answer TEXT NOT NULL, PRIMARY KEY (batch, i));
CREATE INDEX IF NOT EXISTS batches_key ON batches(key);
"""


def _encode(kind: str, answers: Any) -> tuple[str, list[str]]:
    """(JSON of the batch's answers, one JSON answer per query) of a label or score call."""
    if kind == SCORE:
        values = [float(v) for v in np.asarray(answers, dtype=np.float64)]
        return json.dumps(values), [json.dumps(v) for v in values]
    cols = {"preference": answers.preference.tolist(), "chosen": [str(c) for c in answers.chosen],
            "rejected": [str(r) for r in answers.rejected], "tie": answers.tie.tolist(),
            "info": {k: np.asarray(v).tolist() for k, v in answers.info.items()}}
    per = [json.dumps({"preference": cols["preference"][i], "tie": cols["tie"][i],
                       **{k: v[i] for k, v in cols["info"].items()}})
           for i in range(len(answers))]
    return json.dumps(cols), per


def _decode(kind: str, text: str) -> Any:
    from rlhf_env.oracles.base import Labels

    data = json.loads(text)
    if kind == SCORE:
        return np.asarray(data, dtype=np.float64)
    chosen = np.empty(len(data["chosen"]), dtype=object)
    rejected = np.empty(len(data["rejected"]), dtype=object)
    chosen[:], rejected[:] = data["chosen"], data["rejected"]
    return Labels(np.asarray(data["preference"], dtype=np.int64), chosen, rejected,
                  np.asarray(data["tie"], dtype=bool),
                  {k: np.asarray(v) for k, v in data["info"].items()})


class DurableLedger(QueryLedger):
    """A ledger recorded in an SQLite database; see the module docstring.

    The database opens on :meth:`open` (the zoo calls it once the run folder is
    locked); ``budget`` may be left None and is then set, once, by the env the ledger
    is given to. Opening a database made with another budget is an error.

    Args:
        path: the database file (``<run>/ledger.sqlite``).
        budget: the query budget, or None to take the env's.
    """

    def __init__(self, path: str | Path, budget: int | None = None) -> None:
        super().__init__(0 if budget is None else budget)
        self.path = Path(path)
        self._budget_set = budget is not None
        self._db: sqlite3.Connection | None = None
        self._session: int | None = None
        # key -> [(batch id, n)] answered in earlier sessions and not yet answered again
        self._replayable: dict[str, list[tuple[int, int]]] = {}
        self._replayed = 0

    # -- set-up ------------------------------------------------------------------------------
    def bind_budget(self, budget: int) -> None:
        """Take the env's budget (once); a different budget than one already set raises."""
        if self._budget_set and budget != self._budget:
            raise InvalidArgumentError(
                f"the ledger's budget is {self._budget} but the env's is {budget}")
        self._budget, self._budget_set = int(budget), True

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            raise InvalidArgumentError(
                f"the durable ledger {self.path} is not open: call open() before the first query")
        return self._db

    def open(self) -> DurableLedger:
        """Open (or create) the database and load its record; returns self."""
        if self._db is not None:
            return self
        if not self._budget_set:
            raise InvalidArgumentError("give the ledger to an env (or a budget) before open()")
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='budget'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('budget', ?)", (str(self._budget),))
            elif int(row[0]) != self._budget:
                raise InvalidArgumentError(
                    f"{self.path} records a run with a query budget of {row[0]}, not "
                    f"{self._budget}: resume it with the same options (or --overwrite)")
            used = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
            replayable: dict[str, list[tuple[int, int]]] = {}
            for batch_id, key, n in db.execute("SELECT id, key, n FROM batches ORDER BY id"):
                replayable.setdefault(key, []).append((int(batch_id), int(n)))
        except sqlite3.DatabaseError as e:
            raise DataError(
                f"{self.path} is not a readable ledger ({e}); the run's record of paid labels is "
                "lost or damaged: start the run again with --overwrite") from e
        self._db, self._used, self._replayable = db, int(used), replayable
        return self

    def begin_session(self, **info: Any) -> int:
        """Record a new session (and mark sessions of dead processes as killed); its id."""
        db = self._connect()
        with self._lock:
            for sid, pid in db.execute("SELECT id, pid FROM sessions WHERE status='running'"):
                if not _alive(pid):
                    db.execute("UPDATE sessions SET status='killed' WHERE id=?", (sid,))
            cur = db.execute(
                "INSERT INTO sessions (started, status, pid, host, command) VALUES (?,?,?,?,?)",
                (time.time(), "running", os.getpid(), os.uname().nodename,
                 str(info.get("command", ""))))
            self._session = int(cur.lastrowid)
        return self._session

    def end_session(self, status: str) -> None:
        if self._db is None or self._session is None:
            return
        with self._lock:
            self._db.execute("UPDATE sessions SET ended=?, status=? WHERE id=?",
                             (time.time(), status, self._session))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- counts --------------------------------------------------------------------------------
    @property
    def available(self) -> int:
        return self.left + sum(n for v in self._replayable.values() for _, n in v)

    @property
    def replayed(self) -> int:
        """Queries this session answered from the record instead of paying again."""
        return self._replayed

    def sessions(self) -> list[dict[str, Any]]:
        """Every session: id, started, ended, status, pid, host, command, queries paid."""
        db = self._connect()
        rows = db.execute(
            "SELECT s.id, s.started, s.ended, s.status, s.pid, s.host, s.command, "
            "COALESCE((SELECT SUM(n) FROM batches b WHERE b.session = s.id), 0) "
            "FROM sessions s ORDER BY s.id").fetchall()
        keys = ("id", "started", "ended", "status", "pid", "host", "command", "queries_paid")
        return [dict(zip(keys, r)) for r in rows]

    # -- the charge ------------------------------------------------------------------------------
    def charge(self, n: int) -> Any:  # type: ignore[override]
        raise TypeError("a durable ledger records what it charges: use settle()")

    def settle(self, kind: str, prompts: Sequence[str], responses: Sequence[Sequence[str]],
               ask: Callable[[], Any], rng: np.random.Generator | None = None,
               oracle: str = "") -> Any:
        db = self._connect()
        n = len(prompts)
        key = batch_key(kind, prompts, *responses)
        with self._lock:
            ids = self._replayable.get(key)
            replay = ids.pop(0)[0] if ids else None
        if replay is not None:
            answers, state = db.execute("SELECT answers, rng_state FROM batches WHERE id=?",
                                        (replay,)).fetchone()
            if rng is not None and state:
                rng.bit_generator.state = json.loads(state)
            self._replayed += n
            return _decode(kind, answers)
        self._reserve(n)
        try:
            answers = ask()
            batch_json, per_query = _encode(kind, answers)
            state = json.dumps(rng.bit_generator.state) if rng is not None else None
            with self._lock:
                db.execute("BEGIN IMMEDIATE")
                try:
                    cur = db.execute(
                        "INSERT INTO batches (session, kind, n, key, oracle, answers, rng_state, "
                        "time) VALUES (?,?,?,?,?,?,?,?)",
                        (self._session, kind, n, key, oracle, batch_json, state, time.time()))
                    second = responses[1] if len(responses) > 1 else [None] * n
                    db.executemany(
                        "INSERT INTO queries VALUES (?,?,?,?,?,?)",
                        [(cur.lastrowid, i, str(p), str(a), None if b is None else str(b), ans)
                         for i, (p, a, b, ans) in enumerate(zip(prompts, responses[0], second,
                                                                 per_query))])
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except BaseException:
            self._release(n, answered=False)
            raise
        self._release(n, answered=True)
        return answers

    def __repr__(self) -> str:
        return f"DurableLedger({self.path}, used={self._used}, budget={self._budget})"


def _alive(pid: Any) -> bool:
    """Whether a process of this id runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True
