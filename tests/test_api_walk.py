"""The public API, walked from an agent's side, gives 0 gold information for 0 queries
(issue 22, item 5).

**The agent's view.** For each registered id below, ``env = rlhf_env.make(id)`` (the small
configs of ``conftest.SMALL_KWARGS``), sealed as a zoo run seals it: its ledger sealed with a
token only this test holds and a session open (:mod:`rlhf_env.judging`, "Sealed runs").
Outside a run a user's own env's judge answers by design (``tests/test_seal.py``).

**What is walked.** Every public (not ``_``) attribute of: the ``rlhf_env`` package and its
public submodules, ``env``, ``env.unwrapped``, its instance, its ledger, its reference
policy and catalog, a native vector env and ``rlhf_env.make_vec`` from the env's spec; and,
one level further, of every object of the package that these attributes or calls return
(the oracles of ``make_oracle``, policies, catalogs, wrappers, reports, views, ...). Every
attribute is read; every callable defined by the package or Gymnasium is called, with no
arguments where it needs none and otherwise with arguments inferred from its parameter
names (:meth:`Walk.arguments`: the env's prompts and candidates, its views, a zero reward
function, small ints, a scratch folder, a wrong seal token, the names of the privileged
attributes, ...; ``make``/``make_vec`` with the env's spec options, with and without its
ledger, i.e. a view of the run's budget and a twin of its instance). What makes envs is
walked first, and the envs it returns join the views later calls get. Exceptions are
recorded and ignored: an error is not a leak.

**Gold information** is anything only the judge knows: r*(x, a) (the reward table, any
row or single entry of it), theta*, pi*'s probabilities and log-probabilities, J(pi*) and
every value :func:`rlhf_env.evaluate` reports for pi0 (J(pi0), its gold reward, the
best-of-n and optimum reference points). It is looked for in every return value and
attribute, recursively through dicts, lists, tuples, dataclasses, closures and object
attributes (one level into an object, 1e-10 relative): equal as a whole array (1e-9) or
entry by entry (gold entries with six decimals or fewer, such as TinyInstruct's graded
program's 4.0 or 2.8, are left out: they are everyday numbers; strings are not compared).
On every kind, also the source is watched: the instance's gold reward function, its bound
oracle, and the gold side of any env's judge (a twin's too) are counted during the walk;
any call is gold computed for the agent (0 allowed: the walk buys nothing). And the ledger
must record 0 queries.

The walk found one route, now closed (:mod:`rlhf_env.judging`, "Sealed runs"): a *twin*,
``rlhf_env.make(id, **options)`` without the run's ledger (or the env class itself, an
oracle service, ``oracles.report(id)``, ``python -m rlhf_env table``), had the run's gold
reward and a judge that answered — J(pi*), r*, theta* — and a fresh budget.

**Not called, and why** (counted in the test's summary, :data:`SKIPPED`):

* the methods that buy labels (``step``, ``label``, ``score``, ``settle``, ``charge``,
  ``compare``, a TRL reward function's call) on the env, its views, instance and ledger,
  the oat and TRL adapters and :class:`~rlhf_env.wrappers.DiscreteBandit`: they return
  labels (with reward feedback the gold reward itself) and must charge them —
  ``test_what_buys_labels_charges_exactly_what_it_returns`` calls each and checks the
  charge against what came back;
* methods inherited from torch, numpy or ``datasets`` (a policy's ``nn.Module`` API, an
  offline dataset's ``map``): not the package's API, and they see only what the policy or
  dataset already holds (their values are scanned);
* model builders and trainers that take no env (:data:`BUILDERS`): they fit tiny LMs or
  reward models from seeds and public data (minutes of CPU), and reach no instance;
* ``rlhf_env.launch.zoo``: it runs the agent zoo's command line on this process's argv.

**Not walked:** ``HH-RLHF-v0`` (its first make fits a tiny LM and a reward model on the
HH-RLHF slice, ~45 s on 2 cores; its gold side is a reward model behind the same Judge
interface as TinyInstruct's, the sampled kind walked here). ``RLHF_ENV_WALK_ALL=1`` walks it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import inspect
import io
import os
import pkgutil
import secrets
import signal
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlhf_env
from rlhf_env import judging
from rlhf_env.errors import PrivilegedAttributeError
from rlhf_env.judging import instance_of, unsealed
from tests.conftest import SMALL_KWARGS

WALKED = ["LinearBT-v0", "LinearBT-Narrow-v0", "LinearBT-Explore-v0", "LinearBT-Coverage-v0",
          "TinyInstruct-v0"]
NOT_WALKED = {"HH-RLHF-v0": "its first make fits a tiny LM and a reward model (~45 s)"}
if os.environ.get("RLHF_ENV_WALK_ALL") == "1":
    WALKED.append("HH-RLHF-v0")
    NOT_WALKED.clear()

BUYER_NAMES = {"step", "label", "score", "settle", "charge", "compare"}
BUILDERS = {
    "rlhf_env.models.tiny.sft", "rlhf_env.models.tiny.train_reward_model",
    "rlhf_env.models.tiny.cached_tiny_lm", "rlhf_env.models.tiny.cached_reward_model",
    "rlhf_env.models.tiny.build_tiny_lm", "rlhf_env.lm.reward_model.train_bt",
    "rlhf_env.models.gold.gold_reward_model", "rlhf_env.models.smollm2.smollm2_folder",
    "rlhf_env.models.smollm2.load_smollm2", "rlhf_env.models.smollm2.gguf_path",
    "rlhf_env.models.gold.minilm_folder", "rlhf_env.data.hh_rlhf.load_hh_rlhf",
}
NOT_CALLED = {"rlhf_env.launch.zoo": "runs the agent zoo's command line on this process's argv"}
MUTATORS = {"close", "seal", "end_session", "begin_session", "set_wrapper_attr", "freeze",
            "register", "keep", "bind_budget", "open", "load"}
PRIVILEGED_NAMES = ["theta_star", "gold_rewards", "reward_table", "optimal_policy",
                    "behaviour_probs", "instance", "_oracle", "_gold_reward", "ledger"]
CALL_SECONDS = 20
SKIPPED: dict[str, collections.Counter] = {}


class Slow(Exception):
    """A call ran past CALL_SECONDS."""


# ---- the gold side, read only here (the judge, inside the seal) ----------------------------
@dataclasses.dataclass
class Gold:
    arrays: dict[str, np.ndarray]  # name -> the judge's array (whole-array comparison)
    entries: np.ndarray  # sorted distinct non-trivial gold numbers (entry comparison)

    def matches(self, values: np.ndarray) -> list[str]:
        """What of the gold ``values`` (floats) reproduce."""
        found = []
        for name, g in self.arrays.items():
            if values.shape == g.shape and np.allclose(values, g, rtol=1e-9, atol=1e-12):
                found.append(f"equals {name}")
        v = values.reshape(-1)
        v = v[np.isfinite(v)]
        if self.entries.size and v.size:
            i = np.clip(np.searchsorted(self.entries, v), 1, len(self.entries) - 1)
            near = np.minimum(np.abs(self.entries[i] - v), np.abs(self.entries[i - 1] - v))
            hit = near <= 1e-10 * np.maximum(np.abs(v), 1e-300)
            hit &= np.abs(v) > 1e-6
            if hit.any():
                found.append(f"{int(hit.sum())} gold entr{'y' if hit.sum() == 1 else 'ies'} "
                             f"(e.g. {v[hit][0]!r})")
        return found


def _generic(x: np.ndarray) -> np.ndarray:
    """The entries of ``x`` that are not everyday numbers (more than six decimals)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    return x[(np.abs(x) > 1e-6) & (np.abs(np.round(x, 6) - x) > 1e-9 * np.maximum(1, abs(x)))]


def gold_of(env: Any, token: str) -> Gold:
    inst = instance_of(env)
    arrays: dict[str, np.ndarray] = {}
    with unsealed(env, token):
        j = rlhf_env.judge(env)
        if inst.exact:
            arrays["the reward table r*"] = j.reward_table()
            logp = j.optimal_policy().log_probs_table().detach().double().numpy()
            arrays["pi*'s log-probabilities"] = logp
            arrays["pi*'s probabilities"] = np.exp(logp)
            if inst.kind == "linear":
                arrays["theta*"] = j.theta_star
            metrics = rlhf_env.evaluate(inst.reference, env)
        else:
            prompts = list(inst.eval_prompts[:8])
            ys = inst.reference.sample(prompts, n=2, generator=torch.Generator().manual_seed(0))
            arrays["r* of pi0's samples"] = j.gold_rewards(
                [p for p in prompts for _ in range(2)], [y for row in ys for y in row])
            metrics = {}
    entries = [_generic(a) for a in arrays.values()]
    entries.append(_generic(np.array([v for v in metrics.values()
                                      if isinstance(v, float)])))
    return Gold(arrays, np.unique(np.concatenate(entries)))


def find_gold(value: Any, gold: Gold, depth: int = 0, seen: set[int] | None = None) -> list[str]:
    """Where in ``value`` gold information is (see the module docstring)."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 4:
        return []
    seen.add(id(value))
    if isinstance(value, (bool, int, str, bytes, type(None), types.ModuleType, type)):
        return []
    if isinstance(value, (float, np.floating)):
        return gold.matches(np.array([float(value)]))
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.device.type != "meta":
            return gold.matches(value.detach().double().cpu().numpy())
        return []
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.floating):
            return gold.matches(value.astype(np.float64))
        if value.dtype == object:
            value = list(value.reshape(-1)[:10_000])
        else:
            return []
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in list(value.items())[:10_000]:
            out += [f"[{k!r}] {m}" for m in find_gold(v, gold, depth + 1, seen)]
        return out
    if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        for i, v in enumerate(list(value)[:10_000]):
            out += [f"[{i}] {m}" for m in find_gold(v, gold, depth + 1, seen)]
        return out
    if depth > 1:  # objects: their attributes one level deep
        return out
    if isinstance(value, (types.FunctionType, types.MethodType)):
        fn = getattr(value, "__func__", value)
        for i, cell in enumerate(fn.__closure__ or ()):
            with contextlib.suppress(ValueError):
                out += [f"closure[{i}] {m}" for m in find_gold(cell.cell_contents, gold,
                                                               depth + 1, seen)]
        return out
    if dataclasses.is_dataclass(value):
        attrs = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    else:
        attrs = dict(getattr(value, "__dict__", {}) or {})
    if isinstance(value, torch.nn.Module):
        attrs.update(dict(value.named_parameters()))
        attrs.update(dict(value.named_buffers()))
        attrs = {k: v for k, v in attrs.items() if k not in ("_modules", "_parameters",
                                                             "_buffers")}
    if _ours(type(value)):  # public properties too (a returned judge's theta_star)
        for name, _ in inspect.getmembers(type(value), lambda m: isinstance(m, property)):
            if not name.startswith("_"):
                try:
                    attrs[name] = getattr(value, name)
                except Exception:  # noqa: BLE001 - a property that refuses is no leak
                    pass
    for k, v in attrs.items():
        out += [f".{k} {m}" for m in find_gold(v, gold, depth + 1, seen)]
    return out


def _ours(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("rlhf_env")


def _defined_by(fn: Any) -> str:
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__module__", None) or getattr(type(fn), "__module__", "") or ""


def public_modules() -> list[types.ModuleType]:
    names = ["rlhf_env"] + sorted(
        m.name for m in pkgutil.walk_packages(rlhf_env.__path__, "rlhf_env.")
        if not any(part.startswith("_") for part in m.name.split(".")))
    out = []
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ImportError:  # an optional extra that is not installed
            continue
    return out


# ---- the walk ----------------------------------------------------------------------------
class Walk:
    """One agent-side walk of the public API over one sealed env; see the module docstring."""

    def __init__(self, env_id: str, env: Any, token: str, tmp: Path) -> None:
        self.env_id, self.env, self.tmp = env_id, env, tmp
        u = env.unwrapped
        self.inst = u.instance
        self.ledger = self.inst.ledger
        self.spec_kwargs = dict(env.spec.kwargs)
        self.prompts = list(self.inst.train_prompts[:2])
        if self.inst.exact:
            self.responses = list(u.catalog.responses[:2])
        else:
            self.responses = [" a", " b ok"]
        self.views: list[Any] = [env, u, u.make_vec(2), self.inst]
        self.roots: dict[str, Any] = {
            "env": env, "env.unwrapped": u, "instance": self.inst, "ledger": self.ledger,
            "vector env": self.views[2], "reference": u.reference,
            "rlhf_env.make_vec": rlhf_env.make_vec(env_id, 2, **self.spec_kwargs),
        }
        if self.inst.exact:
            self.roots["catalog"] = u.catalog
        # what makes envs first: the envs it makes join the views the rest is called with
        makers = ("rlhf_env.registration", "rlhf_env.envs.", "rlhf_env.service")
        for mod in sorted(public_modules(), key=lambda m: not m.__name__.startswith(makers)):
            self.roots[mod.__name__] = mod
        self.roots["rlhf_env.__main__"] = importlib.import_module("rlhf_env.__main__")
        self.calls = 0
        self.called: set[str] = set()
        self.raised: collections.Counter = collections.Counter()
        self.skipped: collections.Counter = collections.Counter()
        self.leaks: list[str] = []
        self.charged: list[str] = []
        self.slow: list[str] = []
        self.gold_calls: list[str] = []
        self._walked: set[int] = set()
        self._per_type: collections.Counter = collections.Counter()
        self._done: set[tuple[int, str]] = set()

    # -- arguments --------------------------------------------------------------------------
    def arguments(self, where: str, fn: Any) -> list[tuple[tuple, dict]]:
        """The argument sets ``fn`` is called with (at most twelve)."""
        if fn is rlhf_env.make or fn is rlhf_env.make_vec:
            twin = {k: v for k, v in self.spec_kwargs.items() if k != "ledger"}
            extra = (2,) if fn is rlhf_env.make_vec else ()
            return [((self.env_id, *extra), dict(self.spec_kwargs)),
                    ((self.env_id, *extra), twin)]
        if fn is importlib.import_module("rlhf_env.__main__").main:
            return [((["table", "--env", self.env_id],), {}), ((["list"],), {}),
                    ((["oracle-report", self.env_id, "--n-draws", "2"],), {})]
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return [((), {})]
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        choices: dict[str, list[Any]] = {}
        positional: list[str] = []
        for p in sig.parameters.values():
            if p.name in ("self", "cls") or p.default is not p.empty or p.kind in (
                    p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            values = self.candidates(p)
            choices[p.name] = values
            if p.kind is p.KEYWORD_ONLY:
                kwargs[p.name] = values[0]
            else:
                positional.append(p.name)
                args.append(values[0])
        out = [(tuple(args), dict(kwargs))]
        for name, values in choices.items():
            for v in values[1:]:
                if len(out) >= 12:
                    break
                a, k = list(args), dict(kwargs)
                if name in positional:
                    a[positional.index(name)] = v
                else:
                    k[name] = v
                out.append((tuple(a), k))
        return out

    def env_candidates(self) -> list[Any]:
        """The run's four views, then one view of every other instance the walk made."""
        out, seen = list(self.views[:4]), {id(self.inst)}
        for v in self.views[4:]:
            try:
                inst = instance_of(v)
            except Exception:  # noqa: BLE001 - not an env of the package
                continue
            if id(inst) not in seen:
                seen.add(id(inst))
                out.append(v)
        return out[:8]

    def candidates(self, p: inspect.Parameter) -> list[Any]:
        n = p.name.lower()
        r0, r1 = self.responses
        zero = lambda prompts, responses: np.zeros(len(prompts))  # noqa: E731
        table: list[tuple[tuple[str, ...], Callable[[], list[Any]]]] = [
            (("env", "source", "view"), self.env_candidates),
            (("instance", "inst"), lambda: [self.inst]),
            (("env_id", "id"), lambda: [self.env_id]),
            (("prompts", "inputs", "train_prompts", "eval_prompts", "texts", "contexts"),
             lambda: [list(self.prompts)]),
            (("prompt", "x", "text", "p"), lambda: [self.prompts[0]]),
            (("responses", "responses_1", "candidates_a", "completions", "chosen", "r1",
              "resp"), lambda: [[r0, r1]]),
            (("responses_2", "candidates_b", "rejected", "r2"), lambda: [[r1, r0]]),
            (("response", "action", "a"), lambda: [r0]),
            (("actions",), lambda: [([r0, r0], [r1, r1])]),
            (("rng", "generator"), lambda: [np.random.default_rng(0)]),
            (("oracle",), lambda: ["bt"]),
            (("context", "ctx"), lambda: [rlhf_env.oracles.OracleContext(zero)]),
            (("path", "folder", "where", "name_or_path", "data_dir", "file", "filename",
              "directory", "root", "ledger_path"), lambda: [self.tmp / "walk"]),
            (("seed", "tag", "i", "index"), lambda: [0]),
            (("name", "attr", "attribute", "what", "key"), lambda: list(PRIVILEGED_NAMES)),
            (("reference", "policy", "base", "model"), lambda: [self.inst.reference]),
            (("reward", "reward_fn", "gold_reward", "fn", "rm", "reward_model", "build",
              "ask"), lambda: [zero]),
            (("token",), lambda: ["0" * 32]),
            (("status",), lambda: ["done"]),
            (("kind",), lambda: ["label", "score"]),
            (("ledger",), lambda: [self.ledger]),
            (("catalog",), lambda: [self.inst.catalog] if self.inst.exact else [None]),
            (("features", "phi"), lambda: [self.inst.features] if self.inst.kind == "linear"
             else [None]),
            (("messages",), lambda: [[{"role": "user", "content": "hi"}]]),
            (("setting",), lambda: ["hybrid"]),
            (("feedback",), lambda: ["preference"]),
            (("eta", "temperature", "top_p", "value", "z"), lambda: [1.0]),
        ]
        for names, make in table:
            if n in names:
                return make()
        if n.startswith(("n_", "num_", "max_")) or n in ("n", "k", "d", "dim", "limit",
                                                         "every", "size", "batch_size",
                                                         "budget", "query_budget",
                                                         "default_budget", "used",
                                                         "requested"):
            return [2]
        ann = str(p.annotation)
        for word, value in (("int", 2), ("float", 1.0), ("bool", False), ("str", "x"),
                            ("Sequence", [self.prompts[0]] * 2), ("ndarray", np.zeros(2))):
            if word in ann:
                return [value]
        return [self.env, None]

    # -- calling and looking ------------------------------------------------------------------
    def look(self, where: str, value: Any) -> None:
        for m in find_gold(value, self.gold):
            self.leaks.append(f"{where}: {m}")

    def call(self, where: str, fn: Any, depth: int) -> None:
        for args, kwargs in self.arguments(where, fn):
            used, gold_before = self.ledger.used, len(self.gold_calls)
            self.calls += 1
            self.called.add(where)
            sink = io.StringIO()
            ok = False
            signal.setitimer(signal.ITIMER_REAL, CALL_SECONDS)
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                    out = fn(*args, **kwargs)
                ok = True
            except Slow:
                self.slow.append(where)
            except KeyboardInterrupt:
                raise
            except BaseException as e:  # noqa: BLE001 - an error is not a leak
                self.raised[type(e).__name__] += 1
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            # a charge or a gold computation counts even when the call then raised
            if self.ledger.used != used:
                self.charged.append(f"{where}: {self.ledger.used - used} queries")
            if len(self.gold_calls) != gold_before:
                self.gold_calls.append(f"{where} (gold computed)")
            if not ok:
                continue
            self.look(f"{where}(...)", out)
            if isinstance(out, (gym.Env, gym.vector.VectorEnv, type(self.inst))):
                self.views.append(out)
            if depth < 1 and (_ours(type(out)) or isinstance(out, gym.Env)):
                self.queue.append((f"{where}(...)", out, depth + 1))

    def walk_object(self, where: str, obj: Any, depth: int, later: list) -> None:
        if id(obj) in self._walked:
            return
        if not isinstance(obj, types.ModuleType):
            if self._per_type[type(obj)] >= 3:
                return
            self._per_type[type(obj)] += 1
        self._walked.add(id(obj))
        if isinstance(obj, types.ModuleType):
            names = set(getattr(obj, "__all__", ())) | {n for n in dir(obj)
                                                        if not n.startswith("_")}
        else:
            names = {n for n in dir(obj) if not n.startswith("_")}
        for name in sorted(names):
            here = f"{where}.{name}"
            try:
                value = getattr(obj, name)
            except Exception:  # noqa: BLE001 - a refused attribute is no leak
                self.raised["attribute"] += 1
                continue
            if isinstance(obj, types.ModuleType):
                if isinstance(value, types.ModuleType):
                    continue
                if callable(value) and not _ours(value):
                    continue  # another library's name imported into the module
            self.look(here, value)
            if inspect.isclass(value):
                if _ours(value) and value.__module__ == getattr(obj, "__name__", None):
                    self.visit_callable(f"{value.__module__}.{value.__qualname__}", value,
                                        obj, name, depth, later)
                    for sname, static in vars(value).items():
                        if isinstance(static, (classmethod, staticmethod)) and \
                                not sname.startswith("_"):
                            self.visit_callable(f"{value.__module__}.{value.__qualname__}."
                                                f"{sname}", getattr(value, sname), value,
                                                sname, depth, later)
                continue
            if callable(value):
                qual = (f"{value.__module__}.{value.__qualname__}"
                        if isinstance(obj, types.ModuleType) and hasattr(value, "__qualname__")
                        else here)
                if isinstance(obj, types.ModuleType) and _defined_by(value) != obj.__name__:
                    continue  # walked where it is defined
                self.visit_callable(qual, value, obj, name, depth, later)
            elif depth < 1 and (_ours(type(value)) or isinstance(value, gym.Env)):
                self.queue.append((here, value, depth + 1))

    def visit_callable(self, where: str, fn: Any, owner: Any, name: str, depth: int,
                       later: list) -> None:
        key = (id(owner), name)
        if key in self._done:
            return
        self._done.add(key)
        origin = _defined_by(fn)
        if not (origin.startswith(("rlhf_env", "gymnasium")) or inspect.isclass(fn)):
            self.skipped["defined by another library"] += 1
            return
        if name in BUYER_NAMES and self.charges(owner):
            self.skipped["buys labels"] += 1
            return
        if where in BUILDERS:
            self.skipped["builds or trains a model, takes no env"] += 1
            return
        if where in NOT_CALLED:
            self.skipped[NOT_CALLED[where]] += 1
            return
        (later if name in MUTATORS else self.now).append((where, fn, depth))

    def charges(self, owner: Any) -> bool:
        """Whether ``owner``'s buying methods charge the env's ledger."""
        from rlhf_env.integrations.oat import EnvOracle
        from rlhf_env.integrations.trl import OracleFunction
        from rlhf_env.oracles import QueryLedger
        from rlhf_env.wrappers import DiscreteBandit

        return isinstance(owner, (gym.Env, gym.vector.VectorEnv, type(self.inst), QueryLedger,
                                  EnvOracle, OracleFunction, DiscreteBandit))

    def run(self) -> Walk:
        self.queue: collections.deque = collections.deque(
            (name, obj, 0) for name, obj in self.roots.items())
        later: list = []
        while self.queue:
            self.now: list = []
            where, obj, depth = self.queue.popleft()
            self.walk_object(where, obj, depth, later)
            for item in self.now:
                self.call(*item)
        self.now = []
        for item in later:  # what changes state (close, seal, ...), once everything else ran
            self.call(*item)
        while self.queue:  # what those returned
            where, obj, depth = self.queue.popleft()
            self.look(where, obj)
        return self


@contextlib.contextmanager
def sealed_env(env_id: str, **overrides: Any) -> Iterator[tuple[Any, str]]:
    """``rlhf_env.make(env_id)`` sealed as a zoo run seals its env, with a session open."""
    env = rlhf_env.make(env_id, **{**SMALL_KWARGS.get(env_id, {}), **overrides})
    token = secrets.token_hex(16)
    ledger = env.unwrapped.ledger
    ledger.seal(token)
    ledger.begin_session(command="test_api_walk")
    try:
        yield env, token
    finally:
        ledger.end_session("done", token)


JUDGE_SIDE = ("gold_rewards", "reward_table", "optimal_policy", "behaviour_probs")


@contextlib.contextmanager
def counted_gold(walk: Walk) -> Iterator[None]:
    """Count every call of the instance's gold reward and of its bound oracle, and of any
    judge's gold side (a twin's too) (test only: the private attributes are read here,
    never by an agent)."""
    mp = pytest.MonkeyPatch()

    def real(j: Any) -> bool:  # an env's own judge (or its copy), not one made with a fake r*
        inst = j._instance()
        return inst in judging._JUDGES and judging._JUDGES[inst]._gold is j._gold

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(judging.Judge, name)

        def side(self: Any, *a: Any, **k: Any) -> Any:
            if real(self):
                walk.gold_calls.append(f"a judge's {name}")
            return original(self, *a, **k)

        return side

    for name in JUDGE_SIDE:
        mp.setattr(judging.Judge, name, counting(name))
    theta = judging.Judge.theta_star

    def theta_star(self: Any) -> Any:
        if real(self):
            walk.gold_calls.append("a judge's theta_star")
        return theta.fget(self)

    mp.setattr(judging.Judge, "theta_star", property(theta_star))
    j = judging._JUDGES[walk.inst]
    oracle = walk.inst._oracle
    saved = {"gold": j._gold}

    def gold(prompts: Any, responses: Any) -> Any:
        walk.gold_calls.append("the gold reward")
        return saved["gold"](prompts, responses)

    j._gold = gold
    patched = []
    for method in ("label", "score", "choice_probabilities"):
        original = getattr(oracle, method)

        def wrapper(*a: Any, _m: str = method, _f: Any = original, **k: Any) -> Any:
            walk.gold_calls.append(f"the oracle's {_m}")
            return _f(*a, **k)

        setattr(oracle, method, wrapper)
        patched.append(method)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        mp.undo()
        j._gold = saved["gold"]
        for method in patched:
            delattr(oracle, method)


def _alarm(signum: int, frame: Any) -> None:
    raise Slow()


def test_every_registered_id_is_walked_or_skipped_with_a_reason():
    assert set(rlhf_env.list_envs()) == set(WALKED) | set(NOT_WALKED)


@pytest.mark.parametrize("env_id", WALKED)
def test_the_public_api_gives_no_gold_information_for_no_queries(env_id, tmp_path,
                                                                  scratch_registry,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a call writes lands here
    with sealed_env(env_id) as (env, token):
        walk = Walk(env_id, env, token, tmp_path)
        walk.gold = gold_of(env, token)
        with counted_gold(walk):
            walk.run()
        SKIPPED[env_id] = walk.skipped
        print(f"\n{env_id}: {len(walk.called)} callables, {walk.calls} calls, raised "
              f"{dict(walk.raised)}, not called {dict(walk.skipped)}")
        assert walk.leaks == [], "gold information, for free"
        assert walk.gold_calls == [], "the gold reward was computed for the agent"
        assert walk.charged == [] and walk.ledger.used == 0
        assert walk.slow == []
        assert walk.calls > 300 and walk.raised["PrivilegedAttributeError"] > 10


def test_the_walk_finds_gold_where_there_is_some(tmp_path):
    """The walk's eyes work: outside a run (the judge answers) the judge's own values are
    found, and a call of the gold reward is counted."""
    env = rlhf_env.make("LinearBT-v0")
    token = secrets.token_hex(16)
    env.unwrapped.ledger.seal(token)
    walk = Walk("LinearBT-v0", env, token, tmp_path)
    walk.gold = gold_of(env, token)
    with unsealed(env, token):
        j = rlhf_env.judge(env)
        assert find_gold(j, walk.gold)  # theta_star, a property one level down
        assert find_gold({"x": [j.reward_table()[3, 5]]}, walk.gold)
        assert find_gold(rlhf_env.evaluate(env.unwrapped.reference, env), walk.gold)
        assert not find_gold(env.unwrapped.features, walk.gold)
        assert not find_gold(env.unwrapped.reference.probs_table(), walk.gold)
    with counted_gold(walk), unsealed(env, token):
        rlhf_env.judge(env).gold_rewards(["prompt-0"], ["response-0"])
        rlhf_env.oracles.report_pairs(env, n_prompts=1)
    assert set(walk.gold_calls) == {"the gold reward", "a judge's gold_rewards"}


def test_an_agent_cannot_end_its_run_to_make_a_twin():
    """Ending the session without the seal's token (or closing the ledger) leaves the run in
    progress: a twin from the id is still refused, and the harness's token ends it."""
    with sealed_env("LinearBT-v0") as (env, token):
        ledger = env.unwrapped.ledger
        ledger.end_session("done")
        ledger.end_session("done", "0" * 32)
        for twin in (lambda: rlhf_env.make("LinearBT-v0"),
                     lambda: rlhf_env.make_vec("LinearBT-v0", 2),
                     lambda: type(env.unwrapped)(),
                     lambda: rlhf_env.judge(env)):
            with pytest.raises(PrivilegedAttributeError):
                twin()
        view = rlhf_env.make("LinearBT-v0", **env.spec.kwargs)  # the run's own budget: fine
        assert view.unwrapped.ledger is ledger
    assert rlhf_env.judge(rlhf_env.make("LinearBT-v0")).theta_star.shape == (16,)


@pytest.mark.parametrize("feedback", ["preference", "reward"])
def test_what_buys_labels_charges_exactly_what_it_returns(feedback):
    """The callables the walk leaves out: each charges the ledger exactly the labels (or
    rewards) it returns; with reward feedback the values are the gold reward, paid for."""
    from rlhf_env.integrations.oat import EnvOracle
    from rlhf_env.integrations.trl import pairwise_reward_function, reward_function
    from rlhf_env.wrappers import DiscreteBandit

    with sealed_env("LinearBT-v0", setting="online", query_budget=64,
                    feedback=feedback) as (env, token):
        u = env.unwrapped
        inst, ledger = u.instance, u.ledger
        with unsealed(env, token):
            table = rlhf_env.judge(env).reward_table()
        p, (r0, r1) = list(inst.train_prompts[:3]), u.catalog.responses[:2]
        rng = np.random.default_rng(0)

        def charged(call: Callable[[], Any]) -> tuple[int, Any]:
            before = ledger.used
            out = call()
            return ledger.used - before, out

        venv = u.make_vec(3)
        venv.reset(seed=0)
        env.reset(seed=0)
        if feedback == "preference":
            n, out = charged(lambda: env.step((r0, r1)))
            assert n == 1 and out[1] in (0.0, 1.0)
            n, out = charged(lambda: venv.step(([r0] * 3, [r1] * 3)))
            assert n == 3 and len(out[1]) == 3
            n, out = charged(lambda: inst.label(p, [r0] * 3, [r1] * 3, rng))
            assert n == 3 and len(out) == 3
            n, out = charged(lambda: EnvOracle(env).compare(p, [r0] * 3, [r1] * 3))
            assert n == 3 and len(out[0]) == 3
            fn = pairwise_reward_function(env)
            n, out = charged(lambda: fn(p[:1] * 2, [r0, r1]))
            assert n == 1 and len(out) == 2  # one pair: a label and its complement
        else:
            gold = table[inst.catalog.prompt_ids(p), inst.catalog.response_ids([r0] * 3)]
            n, out = charged(lambda: env.step(r0))
            assert n == 1 and out[1] == pytest.approx(table[out[4]["prompt_id"], 0])
            n, out = charged(lambda: venv.step([r0] * 3))
            assert n == 3 and len(out[1]) == 3
            n, out = charged(lambda: inst.score(p, [r0] * 3))
            assert n == 3 and np.allclose(out, gold)  # the gold reward: 3 values, 3 paid
            fn = reward_function(env)
            n, out = charged(lambda: fn(p, [r0] * 3))
            assert n == 3 and np.allclose(out, gold)
            view = DiscreteBandit(env)
            view.reset(seed=0)
            n, out = charged(lambda: view.step(0))
            assert n == 1 and isinstance(out[1], float)
        n, out = charged(lambda: ledger.settle("label", p, ([r0] * 3, [r1] * 3),
                                               lambda: "the caller's own answer"))
        assert n == 3 and out == "the caller's own answer"  # it asks no oracle itself

        def hold() -> None:
            with ledger.charge(2):
                pass

        n, out = charged(hold)
        assert n == 2 and out is None
