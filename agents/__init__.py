"""The agent zoo: agents that learn in rlhf_env environments (imports rlhf_env, never the reverse).

    import rlhf_env, agents
    env = rlhf_env.make("LinearBT-v0", setting="hybrid", seed=0)
    agent = agents.make("iterative_dpo", env, iterations=4).learn()
    rlhf_env.evaluate(agent.policy, env)
"""

from __future__ import annotations

from typing import Any

from agents import best_of_n, dpo, gshf, iterative_dpo, ppo, rso  # noqa: F401  (registers the agents)
from agents.base import AGENTS, Agent, AgentConfig
from rlhf_env.errors import UnknownEnvError, closest

__all__ = ["make", "list_agents", "get", "Agent", "AgentConfig"]


class UnknownAgentError(UnknownEnvError):
    """An agent name that is not registered."""


def get(name: str) -> type[Agent]:
    """The agent class registered as ``name``."""
    if name not in AGENTS:
        raise UnknownAgentError(
            f"no agent named {name!r}.{closest(str(name), AGENTS)} Agents: {', '.join(list_agents())}."
        )
    return AGENTS[name]


def make(name: str, env: Any, **hparams: Any) -> Agent:
    """Build agent ``name`` on ``env`` with hyperparameters (unknown names are an error)."""
    return get(name)(env, **hparams)


def list_agents() -> list[str]:
    """Registered agent names, sorted."""
    return sorted(AGENTS)
