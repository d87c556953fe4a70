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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from rlhf_env.errors import InvalidKwargError, UnknownEnvError, closest

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

    def valid_kwargs(self) -> list[str]:
        """The keyword arguments the constructor takes (empty if it takes ``**kwargs``)."""
        params = inspect.signature(self.load()).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return []
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_REGISTRY: dict[str, EnvSpec] = {}


def register(
    id: str,
    entry_point: str | Callable[..., gym.Env],
    *,
    kwargs: dict[str, Any] | None = None,
    description: str = "",
    override: bool = False,
) -> EnvSpec:
    """Register an env id (and ``rlhf_env/<id>`` with Gymnasium). Returns its spec."""
    if id in _REGISTRY and not override:
        raise ValueError(f"env id {id!r} is already registered (pass override=True to replace)")
    env_spec = EnvSpec(id, entry_point, dict(kwargs or {}), description)
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
    """Gymnasium entry point that validates kwargs through our registry."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id

    def __call__(self, **kwargs: Any) -> gym.Env:
        return _construct(self.env_id, kwargs)


class _GymVectorEntry(_GymEntry):
    def __call__(self, num_envs: int = 1, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.pop("render_mode", None)
        return _construct(self.env_id, kwargs).make_vec(num_envs)


def list_envs() -> list[str]:
    """All registered env ids, sorted."""
    return sorted(_REGISTRY)


def spec(env_id: str) -> EnvSpec:
    """The :class:`EnvSpec` of ``env_id``; unknown ids raise :class:`UnknownEnvError`."""
    if isinstance(env_id, str) and env_id.startswith(GYM_NAMESPACE + "/"):
        env_id = env_id[len(GYM_NAMESPACE) + 1 :]
    if env_id not in _REGISTRY:
        raise UnknownEnvError(
            f"no environment registered as {env_id!r}." + closest(str(env_id), _REGISTRY)
            + f" Registered: {', '.join(list_envs())}."
        )
    return _REGISTRY[env_id]


def _construct(env_id: str, kwargs: dict[str, Any]) -> gym.Env:
    env_spec = spec(env_id)
    valid = env_spec.valid_kwargs()
    if valid:
        unknown = [k for k in kwargs if k not in valid]
        if unknown:
            hint = closest(unknown[0], valid)
            raise InvalidKwargError(
                f"{env_id} got unknown keyword argument(s) {unknown}.{hint} "
                f"Valid: {', '.join(valid)}."
            )
    return env_spec.load()(**{**env_spec.kwargs, **kwargs})


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """Make an environment: ``rlhf_env.make("LinearBT-v0", setting="online", seed=0)``.

    Goes through ``gymnasium.make`` so the env carries its ``spec`` and the usual
    wrappers (order enforcing, passive checker); ``env.unwrapped`` is the env itself.
    """
    spec(env_id)  # clear error for unknown ids before Gymnasium sees them
    name = env_id if env_id.startswith(GYM_NAMESPACE + "/") else f"{GYM_NAMESPACE}/{env_id}"
    return gym.make(name, **kwargs)


def make_vec(env_id: str, num_envs: int, **kwargs: Any) -> Any:
    """A native vector env of ``num_envs`` one-step episodes over one problem instance."""
    env = make(env_id, **kwargs)
    vec = env.unwrapped.make_vec(num_envs)
    vec.spec = env.spec
    return vec
