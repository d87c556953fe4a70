"""The agent zoo: agents that learn in rlhf_env environments (imports rlhf_env, never the reverse).

    import rlhf_env, agents
    env = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=0)
    agent = agents.make("iterative_dpo", env, iterations=4).learn()
    rlhf_env.evaluate(agent.policy, env)

``agents.make(name, env, **overrides)`` takes the agent's hyperparameters from
``zoo_configs/<name>.yml`` (the ``default`` entry, then the env's kind, then the env's
id) and applies ``overrides`` last, exactly as the zoo does. The agents themselves (and
torch) load on first use, so ``rlhf-zoo --help`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.base import AGENTS, AgentConfig, register_agent
from rlhf_env.errors import RLHFEnvError, closest

__all__ = ["make", "list_agents", "get", "Agent", "AgentConfig", "register_agent",
           "UnknownAgentError"]


class UnknownAgentError(RLHFEnvError, LookupError):
    """An agent name that is not registered (a sibling of
    :class:`~rlhf_env.errors.UnknownEnvError`, not a kind of it: the name is an agent's)."""


def _registered() -> dict[str, type]:
    importlib.import_module("agents.algorithms")  # registers every agent (once)
    return AGENTS


def get(name: str) -> Any:
    """The agent class registered as ``name``."""
    agents = _registered()
    if not isinstance(name, str) or name not in agents:
        raise UnknownAgentError(
            f"no agent named {name!r}.{closest(str(name), agents)} Agents: {', '.join(list_agents())}."
        )
    return agents[name]


def make(name: str, env: Any, **hparams: Any) -> Any:
    """Build agent ``name`` on ``env``: zoo config for the env, then ``hparams`` (checked)."""
    return get(name)(env, **hparams)


def list_agents() -> list[str]:
    """Registered agent names, sorted."""
    return sorted(_registered())


def __getattr__(name: str) -> Any:
    if name == "Agent":
        from agents.loop import Agent

        return Agent
    if name == "algorithms":
        return importlib.import_module("agents.algorithms")
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
