"""``python -m rlhf_env`` (or ``rlhf-env``): the registered envs, a reference table, and the
oracle report.

    rlhf-env [table] [--env LinearBT-v0] [--seed 0]    the anchor table of an exact env
    rlhf-env list                                      the registered envs (also --list)
    rlhf-env oracle-report <env-id> --oracle <preset> [<preset> ...] [--env-kwargs K=V ...]

``table`` (the default) evaluates the anchor policies of an exact env (pi0, pi*, and the
uniform policy) with the same harness every agent is judged by. ``oracle-report`` labels a
fixed set of pairs with each named oracle and prints measured agreement with the gold
preference, inter-annotator agreement, P(first chosen) on swapped pairs, P(longer chosen)
at equal gold reward and the tie rate, each beside its target
(:func:`rlhf_env.oracles.report`); it exits with 1 when a statistic is outside its
tolerance. Runs on CPU, with no network.
"""

from __future__ import annotations

import argparse
import json
import sys

import rlhf_env
from rlhf_env.cli_args import parse_key_values
from rlhf_env.errors import RLHFEnvError

COLUMNS = ("objective", "normalized_score", "gold_reward", "kl", "win_rate")
# each command with the one line `rlhf-env --help` lists it with
COMMANDS = {
    "table": "(the default) the anchor table of an exact env: pi0, pi*, uniform",
    "list": "the registered envs",
    "oracle-report": "measure oracle presets against their targets; see its own --help",
}


def format_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """A Markdown table of evaluation dicts, one row per policy."""
    cols = [c for c in COLUMNS if all(c in m for _, m in rows)]
    lines = ["| policy | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def _list_envs() -> int:
    for env_id in rlhf_env.list_envs():
        print(f"{env_id:24s} {rlhf_env.spec(env_id).description}")
    return 0


def _table(env_id: str, seed: int) -> int:
    try:
        env = rlhf_env.make(env_id, seed=seed)
    except RLHFEnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    u = env.unwrapped
    if not u.instance.exact:
        print(f"error: {env_id} is not exactly solvable; pick an exact env", file=sys.stderr)
        return 2
    import torch  # here, so that --help and list answer without loading torch

    from rlhf_env.policies import TabularPolicy

    uniform = TabularPolicy(u.catalog, torch.zeros(u.catalog.shape, dtype=torch.float64))
    rows = [
        ("pi0 (reference)", rlhf_env.evaluate(u.reference, env)),
        ("pi* (Gibbs optimum)", rlhf_env.evaluate(rlhf_env.judge(env).optimal_policy(), env)),
        ("uniform", rlhf_env.evaluate(uniform, env)),
    ]
    print(f"{env_id} (seed {seed}, eta {u.eta}): exact evaluation over d0\n")
    print(format_table(rows))
    return 0


def _oracle_report(args: argparse.Namespace) -> int:
    from rlhf_env.oracles import make_oracle, report, report_pairs

    try:
        for name in args.oracle:
            make_oracle(name)  # an unknown preset fails here, before the env is built
        kwargs = parse_key_values(args.env_kwargs, "--env-kwargs")
        kwargs.setdefault("seed", args.seed)
        env = rlhf_env.make(args.env, **kwargs)
        pairs = report_pairs(env, n_prompts=args.n_prompts, n_samples=args.n_samples,
                             seed=args.seed)
        reports = [report(env, name, pairs=pairs, n_draws=args.n_draws, n_equal=args.n_equal,
                          seed=args.seed, z=args.z) for name in args.oracle]
    except RLHFEnvError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n\n".join(r.format() for r in reports))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([r.as_dict() for r in reports], f, indent=2)
    return 0 if all(r.ok for r in reports) else 1


def _table_parser(prog: str) -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS)) + 2
    parser = argparse.ArgumentParser(
        prog=prog, usage=f"{prog} [{' | '.join(COMMANDS)}] [options]",
        description="The anchor table of an exact env (pi0, pi*, uniform); the options below "
                    "are the table's.",
        epilog="commands:\n" + "\n".join(f"  {c:{width}s}{h}" for c, h in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="LinearBT-v0", help="an exact env id (default LinearBT-v0)")
    parser.add_argument("--seed", type=int, default=0, help="instance seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the registered envs and exit")
    return parser


def _report_parser(prog: str) -> argparse.ArgumentParser:
    from rlhf_env.oracles import list_presets

    parser = argparse.ArgumentParser(
        prog=f"{prog} oracle-report",
        description="Measure oracles on a fixed set of pairs of an env, beside their targets.")
    parser.add_argument("env", help="an env id, e.g. TinyInstruct-v0")
    parser.add_argument("--oracle", nargs="+", default=["bt"], metavar="PRESET",
                        help=f"one or more presets ({', '.join(list_presets())}; default bt)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the env's instance seed and the report's draws (default 0)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V",
                        help="keyword arguments of rlhf_env.make, e.g. size=small, or for "
                             "HH-RLHF-v0: preset=tiny data_dir=PATH subset=harmless-base")
    parser.add_argument("--n-prompts", type=int, default=64, help="prompts (default 64)")
    parser.add_argument("--n-samples", type=int, default=4,
                        help="pi0 samples per prompt on language envs (default 4)")
    parser.add_argument("--n-draws", type=int, default=200,
                        help="labels per pair and order (default 200)")
    parser.add_argument("--n-equal", type=int, default=16,
                        help="fewest pairs behind P(longer chosen) at equal reward (default 16)")
    parser.add_argument("--z", type=float, default=4.0,
                        help="tolerance in standard errors (default 4)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the reports")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "rlhf-env"
    command = argv[0] if argv and argv[0] in COMMANDS else "table"
    if argv and argv[0] in COMMANDS:
        argv = argv[1:]
    if command == "oracle-report":
        return _oracle_report(_report_parser(prog).parse_args(argv))
    if command == "list":
        argparse.ArgumentParser(prog=f"{prog} list",
                                description="List the registered envs.").parse_args(argv)
        return _list_envs()
    args = _table_parser(prog).parse_args(argv)
    if args.list:
        return _list_envs()
    return _table(args.env, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
