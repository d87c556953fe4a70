"""The zoo: YAML configs per agent, run folders, multi-seed leaderboards, the ``rlhf-zoo`` command.

    from agents.zoo import resolve, train_run
    cfg = resolve("iterative_dpo", "LinearBT-v0", seed=0)     # zoo_configs/iterative_dpo.yml
    train_run(cfg, "runs")                                    # runs/LinearBT-v0/iterative_dpo/seed0
"""

from typing import Any

__all__ = ["RunConfig", "resolve", "train_run", "evaluate_run", "main"]


def __getattr__(name: str) -> Any:
    if name in ("RunConfig", "resolve"):
        from agents.zoo import config

        return getattr(config, name)
    if name in ("train_run", "evaluate_run"):
        from agents.zoo import run

        return getattr(run, name)
    raise AttributeError(f"module 'agents.zoo' has no attribute {name!r}")


def main(argv=None) -> int:  # noqa: ANN001 - thin re-export of the command's entry point
    from agents.zoo.cli import main as _main

    return _main(argv)
