"""Environment ids -> constructors.

A plain dict of :class:`EnvSpec` with lazy ``"module:Class"`` entry points
(as Gymnasium does), so registering an env imports nothing heavy. Every id is
also registered with Gymnasium as ``rlhf_env/<id>``, with a vector entry
point, so ``gymnasium.make("rlhf_env/LinearBT-v0")`` and
``gymnasium.make_vec("rlhf_env/LinearBT-v0", 4, vectorization_mode="vector_entry_point")``
work after ``import rlhf_env``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from rlhf_env.errors import InvalidArgumentError, InvalidKwargError, UnknownEnvError, closest

__all__ = ["EnvSpec", "register", "spec", "make", "make_vec", "list_envs", "GYM_NAMESPACE"]

GYM_NAMESPACE = "rlhf_env"


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment.

    Attributes:
        id: the env id, ``Name-vN``.
        entry_point: ``"module:Class"`` or a callable returning an env.
        kwargs: defaults passed to the constructor (overridden by ``make``'s kwargs).
        description: one line for listings.
    """

    id: str
    entry_point: str | Callable[..., gym.Env]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def load(self) -> Callable[..., gym.Env]:
        """Import and return the constructor."""
        if callable(self.entry_point):
            return self.entry_point
        module, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def kind(self) -> str | None:
        """The declared kind of the instances it makes (``exact``, ``linear``, ``sampled``),
        or None for an entry point that is not an rlhf_env env class."""
        kind = getattr(self.load(), "kind", None)
        return kind if isinstance(kind, str) else None

    def valid_kwargs(self) -> list[str]:
        """The keyword arguments the constructor takes (empty if it takes ``**kwargs``)."""
        params = inspect.signature(self.load()).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return []
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_REGISTRY: dict[str, EnvSpec] = {}
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*-v\d+$")
# keyword arguments of earlier versions -> the oracle= they mean (kept for one version)
_DEPRECATED_ORACLE_KWARGS = ("bt_temperature", "deterministic_oracle")


def register(
    id: str,
    entry_point: str | Callable[..., gym.Env],
    *,
    kwargs: dict[str, Any] | None = None,
    description: str = "",
    override: bool = False,
) -> EnvSpec:
    """Register an env id (and ``rlhf_env/<id>`` with Gymnasium). Returns its spec.

    ``id`` is ``Name-vN`` (letters, digits, ``_``, ``.`` and ``-``; never a path);
    ``entry_point`` is ``"module:Class"`` or a callable; ``kwargs`` a dict of defaults.
    Bad input raises before anything is registered.
    """
    if not isinstance(id, str) or not _ID.match(id):
        raise InvalidArgumentError(
            f"an env id is Name-vN (letters, digits, '_', '.', '-'; e.g. 'MyTask-v0'), got {id!r}")
    if id in _REGISTRY and not override:
        raise InvalidArgumentError(
            f"env id {id!r} is already registered (pass override=True to replace)")
    if not (callable(entry_point) or (isinstance(entry_point, str)
                                      and re.match(r"^[\w.]+:[\w.]+$", entry_point))):
        raise InvalidArgumentError(
            f"entry_point must be 'module:Class' or a callable, got {entry_point!r}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InvalidArgumentError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    env_spec = EnvSpec(id, entry_point, dict(kwargs or {}), str(description))
    _REGISTRY[id] = env_spec
    gym_id = f"{GYM_NAMESPACE}/{id}"
    gym.registry.pop(gym_id, None)
    gym.register(
        id=gym_id,
        entry_point=_GymEntry(id),
        vector_entry_point=_GymVectorEntry(id),
        # the ledger is state shared across resets: re-seeding does not replay the
        # budget or the query counts in `info`, so Gymnasium's step-determinism check
        # (which compares info after two seeded steps) does not apply. Observations,
        # rewards and preferences do replay for a seed; tests/test_core.py checks that.
        nondeterministic=True,
    )
    return env_spec


class _GymEntry:
    """Gymnasium entry point that validates kwargs through our registry.

    ``gymnasium.make_vec(..., vectorization_mode="sync")`` deep-copies the spec and calls
    the copy once per sub-env: the copy (:class:`_SharedGymEntry`) builds one instance and
    returns views of it, so the sub-envs share one ledger.
    """

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id

    def __call__(self, **kwargs: Any) -> gym.Env:
        return _construct(self.env_id, kwargs)

    def __deepcopy__(self, memo: dict) -> _SharedGymEntry:
        return _SharedGymEntry(self.env_id)


class _SharedGymEntry(_GymEntry):
    """The entry of one ``gymnasium.make_vec`` call: every sub-env views one instance."""

    def __init__(self, env_id: str) -> None:
        super().__init__(env_id)
        self.pid = os.getpid()
        self.first: gym.Env | None = None

    def __call__(self, **kwargs: Any) -> gym.Env:
        # AsyncVectorEnv makes a first env in this process (for its spaces) before it starts
        # the workers: refusing there raises in the caller, not as a worker's dropped pipe
        if os.getpid() != self.pid or _inside_async_vector_env():
            raise InvalidArgumentError(
                f"{self.env_id}: vectorization_mode='async' would give each process its own "
                "problem instance and query budget. Use rlhf_env.make_vec(id, n) (one oracle "
                "call per step), or vectorization_mode='sync' (sub-envs share one ledger).")
        if self.first is None:
            self.first = _construct(self.env_id, kwargs)
            return self.first
        return self.first.view()  # type: ignore[attr-defined]

    def __deepcopy__(self, memo: dict) -> _SharedGymEntry:
        return _SharedGymEntry(self.env_id)


def _inside_async_vector_env() -> bool:
    """Whether a ``gymnasium.vector.AsyncVectorEnv`` constructor is on the call stack."""
    from gymnasium.vector import AsyncVectorEnv

    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"),
                                                              AsyncVectorEnv):
            return True
        frame = frame.f_back
    return False


class _GymVectorEntry(_GymEntry):
    """The native vector env (one instance, one oracle call per step) for ``make_vec``."""

    def __call__(self, num_envs: int = 1, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.pop("render_mode", None)
        return _construct(self.env_id, kwargs).make_vec(num_envs)

    def __deepcopy__(self, memo: dict) -> _GymVectorEntry:  # type: ignore[override]
        return _GymVectorEntry(self.env_id)


def list_envs() -> list[str]:
    """All registered env ids, sorted."""
    return sorted(_REGISTRY)


def spec(env_id: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``env_id``; unknown ids raise :class:`UnknownEnvError`."""
    if not isinstance(env_id, str):
        raise UnknownEnvError(f"an env id is a str such as 'LinearBT-v0', got {env_id!r}")
    if env_id.startswith(GYM_NAMESPACE + "/"):
        env_id = env_id[len(GYM_NAMESPACE) + 1 :]
    if env_id not in _REGISTRY:
        raise UnknownEnvError(
            f"no environment registered as {env_id!r}." + closest(str(env_id), _REGISTRY)
            + f" Registered: {', '.join(list_envs())}."
        )
    return _REGISTRY[env_id]


def _oracle_from_deprecated(env_id: str, kwargs: dict[str, Any]) -> None:
    """Turn the keyword arguments of earlier versions into ``oracle=`` (with a warning)."""
    old = {k: kwargs.pop(k) for k in _DEPRECATED_ORACLE_KWARGS if k in kwargs}
    if not old:
        return
    if "oracle" in kwargs:
        raise InvalidKwargError(
            f"{env_id}: pass the oracle's settings in oracle= only, not also {sorted(old)}")
    from rlhf_env.oracles import BradleyTerry

    warnings.warn(
        f"{sorted(old)} are deprecated: pass oracle=rlhf_env.oracles.BradleyTerry("
        "temperature=..., deterministic=...) (or a preset name such as 'gao-argmax')",
        FutureWarning, stacklevel=4)
    kwargs["oracle"] = BradleyTerry(old.get("bt_temperature", 1.0),
                                    deterministic=old.get("deterministic_oracle", False))


def _construct(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    env_spec = spec(env_id)
    valid = env_spec.valid_kwargs()
    if "oracle" in valid:
        _oracle_from_deprecated(env_id, kwargs)
    if valid:
        for source, given in (("the defaults registered for it", env_spec.kwargs),
                              ("the call", kwargs)):
            unknown = [k for k in given if k not in valid]
            if unknown:
                hint = closest(unknown[0], valid)
                raise InvalidKwargError(
                    f"{env_id} got unknown keyword argument(s) {unknown} (from {source}).{hint} "
                    f"Valid: {', '.join(valid)}.")
    env = env_spec.load()(**{**env_spec.kwargs, **kwargs})
    instance = getattr(env, "instance", None)
    if instance is not None:
        instance.name = env_id
    return env


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """Make an environment: ``rlhf_env.make("LinearBT-v0", setting="online", seed=0)``.

    Goes through ``gymnasium.make`` so the env carries its ``spec`` and the usual
    wrappers (order enforcing, passive checker); ``env.unwrapped`` is the env itself.
    """
    env_id = spec(env_id).id  # clear error for unknown ids before Gymnasium sees them
    name = f"{GYM_NAMESPACE}/{env_id}"
    env = gym.make(name, **kwargs)
    # an env re-made from this env's spec is another view of the same budget, not a fresh
    # one: the spec names the ledger (and so carries a sealed run's seal along)
    inst = getattr(env.unwrapped, "instance", None)
    if inst is not None and "ledger" in spec(env_id).valid_kwargs():
        for s in {id(x): x for x in (env.spec, env.unwrapped.spec) if x is not None}.values():
            s.kwargs["ledger"] = inst.ledger
    return env


def make_vec(env_id: str, num_envs: int, **kwargs: Any) -> Any:
    """A native vector env of ``num_envs`` one-step episodes over one problem instance."""
    return make(env_id, **kwargs).unwrapped.make_vec(num_envs)
