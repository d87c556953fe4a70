"""``python -m rlhf_env`` (or ``rlhf-env``): the registered envs and a reference table.

Evaluates the anchor policies of an exact env (pi0, pi*, and the uniform
policy) with the same harness every agent is judged by, and prints the table.
Runs on CPU in seconds, with no network.
"""

from __future__ import annotations

import argparse
import sys

import torch

import rlhf_env
from rlhf_env.errors import RLHFEnvError
from rlhf_env.policies import TabularPolicy

COLUMNS = ("objective", "normalized_score", "gold_reward", "kl", "win_rate")


def format_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """A Markdown table of evaluation dicts, one row per policy."""
    cols = [c for c in COLUMNS if all(c in m for _, m in rows)]
    lines = ["| policy | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhf-env", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="LinearBT-v0", help="an exact env id (default LinearBT-v0)")
    parser.add_argument("--seed", type=int, default=0, help="instance seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the registered envs and exit")
    args = parser.parse_args(argv)
    if args.list:
        for env_id in rlhf_env.list_envs():
            print(f"{env_id:24s} {rlhf_env.spec(env_id).description}")
        return 0
    try:
        env = rlhf_env.make(args.env, seed=args.seed)
    except RLHFEnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    u = env.unwrapped
    if not u.instance.exact:
        print(f"error: {args.env} is not exactly solvable; pick an exact env", file=sys.stderr)
        return 2
    uniform = TabularPolicy(u.catalog, torch.zeros(u.catalog.shape, dtype=torch.float64))
    rows = [
        ("pi0 (reference)", rlhf_env.evaluate(u.reference, env)),
        ("pi* (Gibbs optimum)", rlhf_env.evaluate(rlhf_env.judge(env).optimal_policy(), env)),
        ("uniform", rlhf_env.evaluate(uniform, env)),
    ]
    print(f"{args.env} (seed {args.seed}, eta {u.eta}): exact evaluation over d0\n")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
