"""One module per agent; importing this package registers them all."""

from agents.algorithms import best_of_n, dpo, gshf, iterative_dpo, ppo, rso  # noqa: F401

__all__ = ["best_of_n", "dpo", "gshf", "iterative_dpo", "ppo", "rso"]
