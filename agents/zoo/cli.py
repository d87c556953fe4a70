"""``rlhf-zoo`` (also ``python -m agents.zoo``): list, train, eval, leaderboard.

    rlhf-zoo list
    rlhf-zoo train --env LinearBT-v0 --agent iterative_dpo --seed 0 [--hyperparams k=v ...]
    rlhf-zoo eval runs/LinearBT-v0/iterative_dpo/seed0
    rlhf-zoo leaderboard --env LinearBT-v0 --seeds 3 --out leaderboards/LinearBT-v0
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhf_env.errors import RLHFEnvError

__all__ = ["main", "build_parser"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="env id (rlhf-zoo list shows them)")
    p.add_argument("--setting", choices=("offline", "online", "hybrid"), default=None,
                   help="override the config's setting")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V",
                   help="keyword arguments to rlhf_env.make (values read as YAML)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--tensorboard-log", default=None, metavar="DIR",
                   help="also write TensorBoard events to DIR/<env>/<agent>/seed<S>")
    p.add_argument("--overwrite", action="store_true", help="replace existing run folders")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="env ids and agents, with one-line descriptions")

    t = sub.add_parser("train", help="train one agent on one env with one seed")
    _common(t)
    t.add_argument("--agent", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--hyperparams", nargs="*", default=[], metavar="K=V",
                   help="override the agent's config (values read as YAML)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")

    e = sub.add_parser("eval", help="re-evaluate a stored run")
    e.add_argument("run_dir")
    e.add_argument("--eval-kwargs", nargs="*", default=[], metavar="K=V",
                   help="options to rlhf_env.evaluate (sampled envs)")

    lb = sub.add_parser("leaderboard", help="train or reuse runs over seeds; table and plots")
    _common(lb)
    lb.add_argument("--agents", default="all", help="'all' or a comma-separated list")
    lb.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    lb.add_argument("--out", default=None, help="output folder (default leaderboards/<env>)")
    return parser


def _list() -> None:
    import agents
    import rlhf_env
    from rlhf_env.registration import spec

    print("Environments:")
    for env_id in rlhf_env.list_envs():
        print(f"  {env_id:<22} {spec(env_id).description}")
    print("\nAgents:")
    for name in agents.list_agents():
        print(f"  {name:<22} {agents.get(name).description}")


def _print_summary(result: dict[str, Any]) -> None:
    keys = ("normalized_score", "objective", "gold_reward", "kl", "win_rate", "queries_used",
            "wall_s")
    for k in keys:
        if k in result:
            print(f"  {k:<18} {result[k]:.4f}" if isinstance(result[k], float)
                  else f"  {k:<18} {result[k]}")


def _run(args: argparse.Namespace, command: str) -> int:
    from agents.zoo.config import parse_overrides, resolve

    if args.command == "list":
        _list()
        return 0
    if args.command == "eval":
        from agents.zoo.run import evaluate_run

        result = evaluate_run(args.run_dir, **parse_overrides(args.eval_kwargs, "--eval-kwargs"))
        print(f"{args.run_dir}:")
        _print_summary(result)
        return 0
    env_kwargs = parse_overrides(args.env_kwargs, "--env-kwargs")
    if args.command == "train":
        from agents.zoo.run import run_dir, train_run

        cfg = resolve(args.agent, args.env, args.seed, env_kwargs=env_kwargs, setting=args.setting,
                      hyperparams=parse_overrides(args.hyperparams, "--hyperparams"))
        result = train_run(cfg, args.runs_dir, resume=args.resume, overwrite=args.overwrite,
                           tensorboard_log=args.tensorboard_log, command=command)
        print(f"{run_dir(args.runs_dir, args.env, args.agent, args.seed)}:")
        _print_summary(result)
        return 0
    import rlhf_env
    from agents.zoo.leaderboard import agent_names, run_leaderboard, write_leaderboard
    from rlhf_env.errors import InvalidArgumentError

    rlhf_env.spec(args.env)
    if args.seeds < 1:
        raise InvalidArgumentError(f"--seeds must be >= 1 (seeds 0..N-1), got {args.seeds}")
    names = agent_names(args.agents, args.env)
    if not names:
        raise InvalidArgumentError(
            f"no agent has an entry for {args.env} in zoo_configs/; name them with "
            "--agents a,b (they run with their 'default' entry)")
    out = Path(args.out or Path("leaderboards") / args.env)
    results, failures = run_leaderboard(
        args.env, names, range(args.seeds), runs=args.runs_dir, env_kwargs=env_kwargs,
        setting=args.setting, overwrite=args.overwrite, tensorboard_log=args.tensorboard_log,
        command=command)
    if any(results.values()):
        report = write_leaderboard(args.env, results, out, runs=args.runs_dir, command=command)
        print(report["table"])
        print(f"\nwrote {out / 'leaderboard.md'}, {out / 'leaderboard.json'} and "
              + ", ".join(Path(f).name for f in report["figures"]))
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    return 1 if failures else 0


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a user error or failed runs, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "rlhf-zoo " + shlex.join(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)  # kill -> the ledger records the session
    try:
        return _run(args, command)
    except KeyboardInterrupt:
        print("interrupted: continue with the same command and --resume", file=sys.stderr)
        return 130
    except (RLHFEnvError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()

