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
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.errors import DataError, InvalidArgumentError, QueryBudgetExceeded

__all__ = ["QueryLedger", "DurableLedger", "batch_key", "runs_in_progress"]

LABEL, SCORE = "label", "score"

_RUNS: weakref.WeakSet[QueryLedger] = weakref.WeakSet()
"""The sealed ledgers of this process with a session open: zoo runs in progress."""


def runs_in_progress() -> list[QueryLedger]:
    """The sealed ledgers with an open session in this process (a zoo run is in progress
    while one is): :mod:`rlhf_env.judging` then refuses new instances and other judges."""
    return list(_RUNS)


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
        self._in_session(True)
        return 0

    def _in_session(self, open_: bool) -> None:
        """Record whether a session is open: a sealed ledger with one is a run in progress
        (:func:`runs_in_progress`) until :meth:`end_session` is given the seal's token."""
        self._session_open = open_
        if open_ and self.sealed:
            _RUNS.add(self)
        else:
            _RUNS.discard(self)

    # -- the seal ------------------------------------------------------------------------------
    def seal(self, token: str) -> None:
        """Seal the instance(s) charged to this ledger: from now on the judge answers only
        inside :func:`rlhf_env.judging.unsealed` with ``token`` (the zoo seals every run, so
        that nothing in the agent's process evaluates for free). A ledger is sealed once."""
        if not isinstance(token, str) or len(token) < 16:
            raise InvalidArgumentError("a seal token is a string of at least 16 characters")
        if getattr(self, "_seal_token", None) not in (None, token):
            raise InvalidArgumentError("this ledger is already sealed with another token")
        self._seal_token = token
        self._in_session(getattr(self, "_session_open", False))

    @property
    def sealed(self) -> bool:
        """Whether the judge of the instances charged to this ledger is sealed."""
        return getattr(self, "_seal_token", None) is not None

    def opens(self, token: Any) -> bool:
        """Whether ``token`` is this ledger's seal token."""
        import hmac

        own = getattr(self, "_seal_token", None)
        return own is not None and isinstance(token, str) and hmac.compare_digest(own, token)

    def end_session(self, status: str, token: str | None = None) -> None:
        """Close the current session with ``status`` (``done``, ``interrupted``, ...). A
        sealed ledger's run stays in progress (:func:`runs_in_progress`) unless ``token``
        is its seal's: an agent cannot end its own run's seal."""
        self._end_run(token)

    def _end_run(self, token: str | None) -> None:
        if not self.sealed or self.opens(token):
            self._in_session(False)

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

    **Bound and checked.** ``identity`` (the zoo passes the run's env id, agent, seed,
    oracle and a digest of the env's options) is written into a new database and compared
    on every later open: a ledger copied from another run is refused. Every committed batch
    extends a running SHA-256 over the batches and their queries (stored with the count in
    the database, in the same transaction): on open the chain is recomputed, so an edited,
    deleted or added row is refused. A seal beside the database (``<file>.seal``: batches
    and chain, rewritten after each commit) catches a database deleted or replaced by an
    older copy after labels were paid. A refused ledger names what differs; nothing is
    repaired silently.

    Args:
        path: the database file (``<run>/ledger.sqlite``).
        budget: the query budget, or None to take the env's.
        identity: a JSON-serialisable mapping naming the run (see above), or None.
    """

    def __init__(self, path: str | Path, budget: int | None = None,
                 identity: dict[str, Any] | None = None) -> None:
        super().__init__(0 if budget is None else budget)
        self.identity = None if identity is None else json.loads(json.dumps(identity,
                                                                            sort_keys=True))
        self._chain, self._batches = "", 0
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
            self._check_identity(db)
            self._check_chain(db)
            used = db.execute("SELECT COALESCE(SUM(n), 0) FROM batches").fetchone()[0]
            replayable: dict[str, list[tuple[int, int]]] = {}
            for batch_id, key, n in db.execute("SELECT id, key, n FROM batches ORDER BY id"):
                replayable.setdefault(key, []).append((int(batch_id), int(n)))
        except sqlite3.DatabaseError as e:
            raise DataError(
                f"{self.path} is not a readable ledger ({e}); the run's record of paid labels is "
                "lost or damaged: start the run again with --overwrite") from e
        self._db, self._used, self._replayable = db, int(used), replayable
        self._write_seal()
        return self

    # -- binding -----------------------------------------------------------------------------
    def _check_identity(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        if self.identity is None:
            return
        if row is None:
            if db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]:
                raise DataError(f"{self.path} holds paid labels but no run identity: it was "
                                "not written for this run; start it again with --overwrite")
            db.execute("INSERT INTO meta VALUES ('identity', ?)",
                       (json.dumps(self.identity, sort_keys=True),))
            return
        stored = json.loads(row[0])
        if stored != self.identity:
            diff = sorted(k for k in set(stored) | set(self.identity)
                          if stored.get(k) != self.identity.get(k))
            raise DataError(
                f"{self.path} is the ledger of another run ({', '.join(f'{k}: {stored.get(k)!r}' for k in diff)}; "
                f"this run: {', '.join(f'{k}: {self.identity.get(k)!r}' for k in diff)}); "
                "a ledger is never shared between runs")

    @staticmethod
    def _link(chain: str, db: sqlite3.Connection, batch: tuple) -> str:
        batch_id = batch[0]
        h = hashlib.sha256(chain.encode())
        h.update(json.dumps([str(v) for v in batch], ensure_ascii=True).encode())
        for q in db.execute("SELECT i, prompt, response_1, response_2, answer FROM queries "
                            "WHERE batch=? ORDER BY i", (batch_id,)):
            h.update(json.dumps([str(v) for v in q], ensure_ascii=True).encode())
        return h.hexdigest()

    def _check_chain(self, db: sqlite3.Connection) -> None:
        seal = self._read_seal()
        chain, count, at_seal = "", 0, None
        for batch in db.execute("SELECT id, kind, n, key, oracle, answers, rng_state FROM "
                                "batches ORDER BY id").fetchall():
            chain, count = self._link(chain, db, batch), count + 1
            if seal and count == seal["batches"]:
                at_seal = chain
        stored = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('chain', "
                                 "'batches')").fetchall())
        if stored:
            if int(stored.get("batches", -1)) != count or stored.get("chain") != chain:
                raise DataError(
                    f"{self.path} was edited after it was written: its {count} answered "
                    f"batches do not reproduce the recorded digest of "
                    f"{stored.get('batches')} batches (a row changed, added or deleted). Its "
                    "record of paid labels cannot be trusted: start the run again with "
                    "--overwrite")
        elif count:
            raise DataError(f"{self.path} holds {count} batches without their digest: it was "
                            "not written by this version, or was edited")
        if seal and seal["batches"] > 0 and (count < seal["batches"] or at_seal != seal["chain"]):
            raise DataError(
                f"{self.path} holds {count} answered batches, but {self._seal_path()} records "
                f"{seal['batches']} paid ones ({seal['used']} queries): the ledger was deleted "
                "or replaced after labels were paid. Restore it, or start the run again with "
                "--overwrite")
        self._chain, self._batches = chain, count

    def _seal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".seal")

    def _read_seal(self) -> dict[str, Any] | None:
        f = self._seal_path()
        if not f.is_file():
            return None
        try:
            seal = json.loads(f.read_text())
            return {"batches": int(seal["batches"]), "chain": str(seal["chain"]),
                    "used": int(seal.get("used", 0))}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{f} is damaged ({e}); delete it only if the ledger beside it is "
                            "the run's own") from e

    def _write_seal(self) -> None:
        f = self._seal_path()
        tmp = f.with_name(f.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"batches": self._batches, "chain": self._chain,
                                   "used": self._used}))
        tmp.replace(f)

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
        self._in_session(True)
        return self._session

    def end_session(self, status: str, token: str | None = None) -> None:
        self._end_run(token)
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
                    chain = self._link(self._chain, db, (cur.lastrowid, kind, n, key, oracle,
                                                         batch_json, state))
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('chain', ?)", (chain,))
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('batches', ?)",
                               (str(self._batches + 1),))
                    db.execute("COMMIT")
                    self._chain, self._batches = chain, self._batches + 1
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        except BaseException:
            self._release(n, answered=False)
            raise
        self._release(n, answered=True)
        with self._lock:
            self._write_seal()
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
