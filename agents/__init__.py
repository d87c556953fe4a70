"""The agent zoo: agents that learn in rlhf_env environments (imports rlhf_env, never the reverse).

    import rlhf_env, agents
    env = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=0)
    agent = agents.make("iterative_dpo", env, iterations=4).learn()
    rlhf_env.evaluate(agent.policy, env)

``agents.make(name, env, **overrides)`` takes the agent's hyperparameters from
``zoo_configs/<name>.yml`` (the ``default`` entry, then the env's kind, then the env's
id) and applies ``overrides`` last, exactly as the zoo does.
"""

from __future__ import annotations

from typing import Any

from agents import algorithms  # noqa: F401  (registers the agents)
from agents.base import AGENTS, AgentConfig, register_agent
from agents.loop import Agent
from rlhf_env.errors import UnknownEnvError, closest

__all__ = ["make", "list_agents", "get", "Agent", "AgentConfig", "register_agent",
           "UnknownAgentError"]


class UnknownAgentError(UnknownEnvError):
    """An agent name that is not registered."""


def get(name: str) -> type[Agent]:
    """The agent class registered as ``name``."""
    if not isinstance(name, str) or name not in AGENTS:
        raise UnknownAgentError(
            f"no agent named {name!r}.{closest(str(name), AGENTS)} Agents: {', '.join(list_agents())}."
        )
    return AGENTS[name]


def make(name: str, env: Any, **hparams: Any) -> Agent:
    """Build agent ``name`` on ``env``: zoo config for the env, then ``hparams`` (checked)."""
    return get(name)(env, **hparams)


def list_agents() -> list[str]:
    """Registered agent names, sorted."""
    return sorted(AGENTS)
