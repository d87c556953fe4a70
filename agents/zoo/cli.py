"""rlhf-zoo (also python -m agents.zoo): list, train, eval, leaderboard, suite.

    rlhf-zoo list
    rlhf-zoo train --env LinearBT-v0 --agent iterative_dpo --seed 0 [--hyperparams k=v ...]
    rlhf-zoo eval runs/LinearBT-v0/iterative_dpo/seed0
    rlhf-zoo leaderboard --env LinearBT-v0 --seeds 3
    rlhf-zoo suite --families small --seeds 10
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "console", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``"N"`` alone is seeds 0..N-1; ``"A-B"`` is A..B inclusive; a
    comma-separated list names seeds and ranges (``"0,5,7"``, ``"0-4,10"``: in a list a bare
    number is one seed). Seeds are non-negative ints, each named once."""
    from rlhf_env.errors import InvalidArgumentError

    def bad(why: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"--seeds {text!r}: {why} (give N for seeds 0..N-1, A-B for A..B, or a "
            "comma-separated list of seeds and ranges, e.g. 0,5,7 or 0-4,10)")

    parts = [p.strip() for p in str(text).split(",")]
    if not all(parts):
        raise bad("an empty item")
    seeds: list[int] = []
    for part in parts:
        lo, dash, hi = part.partition("-")
        if not (lo.isdigit() and (not dash or hi.isdigit())):
            raise bad(f"{part!r} is not N or A-B with non-negative integers")
        if dash:
            if int(hi) < int(lo):
                raise bad(f"{part!r} is an empty range")
            seeds += range(int(lo), int(hi) + 1)
        elif len(parts) == 1:
            if int(lo) < 1:
                raise bad("N must be >= 1")
            seeds += range(int(lo))
        else:
            seeds.append(int(lo))
    if len(set(seeds)) != len(seeds):
        raise bad("a seed is named twice")
    if len(seeds) > MAX_SEEDS:
        raise bad(f"{len(seeds)} seeds is more than the {MAX_SEEDS} one command runs")
    return seeds


MAX_SEEDS = 1000
"""The most seeds one leaderboard command runs (each is a run per agent)."""


def check_output_dir(path: Any, flag: str) -> None:
    """``path`` (a folder the command writes into) is a non-empty name that is a folder or
    can become one: not a file, nor inside one."""
    from rlhf_env.errors import InvalidArgumentError

    if path is None:
        return
    if not str(path).strip():
        raise InvalidArgumentError(f"{flag} is empty: name a folder")
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise InvalidArgumentError(
                    f"{flag} {str(path)!r}: {str(q)!r} is a file, not a folder")
            break

_EPILOG = """\
Values after --hyperparams, --env-kwargs and --eval-kwargs are read as YAML:
3, 0.1, true, [2.0, 1.0], {n_samples: 4}. Nested settings take dots:
--hyperparams reward_model.steps=400.

Outside a terminal (CI, nohup, a pipe) every finished round and run prints one
line; -v prints more, -q only errors."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True,
                   help="a registered env id, e.g. LinearBT-v0 (rlhf-zoo list shows them)")
    p.add_argument("--setting", choices=("offline", "online", "hybrid"), default=None,
                   help="override the config's setting")
    p.add_argument("--oracle", default=None, metavar="PRESET",
                   help="the training oracle: a preset name (bt, gao-argmax, coste-flip25, "
                        "alpacafarm, human-like); evaluation always uses the clean gold reward")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V",
                   help="keyword arguments to rlhf_env.make (values read as YAML)")
    p.add_argument("--runs-dir", default="runs", metavar="DIR",
                   help="where run folders go (default: runs)")
    p.add_argument("--tensorboard-log", default=None, metavar="DIR",
                   help="write TensorBoard events to DIR/<env>/<agent>/seed<S> instead of "
                        "the run folder's tensorboard/ (one tree for many runs)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing run folders (only folders this tool made)")


def build_parser() -> argparse.ArgumentParser:
    from rlhf_env import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="rlhf-zoo", formatter_class=fmt, epilog=_EPILOG,
        description="The rlhf_env agent zoo: train agents, evaluate runs, build leaderboards.")
    parser.add_argument("--version", action="version", version=f"rlhf-zoo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only, no bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="env ids and agents, with one-line descriptions",
                   description="Env ids and agents, with one-line descriptions.")

    t = sub.add_parser("train", formatter_class=fmt, epilog=_EPILOG,
                       help="train one agent on one env with one seed",
                       description="Train one agent on one env with one seed, into "
                                   "RUNS_DIR/<env>/<agent>/seed<S>.")
    _common(t)
    t.add_argument("--agent", required=True, help="an agent name (rlhf-zoo list shows them)")
    t.add_argument("--seed", type=int, default=0,
                   help="seeds the problem instance and the agent (default 0)")
    t.add_argument("--hyperparams", nargs="*", default=[], metavar="K=V",
                   help="override the agent's zoo config (values read as YAML)")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run; labels it paid for are not bought again")

    e = sub.add_parser("eval", help="re-evaluate a stored run, or evaluate any checkpoint",
                       description="Re-evaluate the policy stored in a run folder and rewrite "
                                   "its eval.json; or, with --model, evaluate a checkpoint "
                                   "trained elsewhere (a Hugging Face folder or hub id, a LoRA "
                                   "adapter on the env's pi0, a saved policy) into "
                                   "RUNS_DIR/<env>/external/<name>/seed<S> for the "
                                   "leaderboard's --include-external.")
    e.add_argument("run_dir", nargs="?", default=None,
                   help="a run folder, e.g. runs/LinearBT-v0/dpo/seed0 (not with --model)")
    e.add_argument("--eval-kwargs", nargs="*", default=[], metavar="K=V",
                   help="options to rlhf_env.evaluate (sampled envs only: n_samples, "
                        "n_prompts, seed, temperature, best_of_n)")
    e.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="a checkpoint to evaluate as an external row (needs --env)")
    e.add_argument("--env", default=None, help="the env id (with --model)")
    e.add_argument("--env-kwargs", nargs="*", default=[], metavar="K=V",
                   help="keyword arguments to rlhf_env.make (with --model)")
    e.add_argument("--oracle", default=None, metavar="PRESET",
                   help="the training oracle of the runs it is compared with")
    e.add_argument("--seeds", default=None, metavar="SEEDS",
                   help="instances to evaluate on, as the leaderboard's --seeds (default: seed "
                        "0; on an exact env, the seed of the zoo run the policy was trained "
                        "in: each seed is another instance, and a policy is scored on its own "
                        "only)")
    e.add_argument("--name", default=None, help="the row's name (default: the folder's)")
    e.add_argument("--labels", type=int, default=0,
                   help="labels the checkpoint was trained on, for the table (default 0)")
    e.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="evaluate a model whose tokenizer differs from pi0's (KL on text)")
    e.add_argument("--runs-dir", default="runs", metavar="DIR",
                   help="where external run folders go (default: runs)")

    lb = sub.add_parser("leaderboard", formatter_class=fmt, epilog=_EPILOG,
                        help="train or reuse runs over seeds; table, JSON and plots",
                        description="Train (or reuse) every (agent, seed) run, then write a "
                                    "table, a JSON file and plots.")
    _common(lb)
    lb.add_argument("--agents", default="all",
                    help="'all' (every agent with a zoo config entry for the env) or a "
                         "comma-separated list")
    lb.add_argument("--seeds", default="3", metavar="SEEDS",
                    help="N alone: seeds 0..N-1 (default 3); A-B: seeds A to B inclusive; "
                         "or a comma-separated list of seeds and ranges, e.g. 0,5,7 or "
                         "0-4,10")
    lb.add_argument("--out", default=None, metavar="DIR",
                    help="output folder (default RUNS_DIR/leaderboards/<env>[-<oracle>])")
    lb.add_argument("--versus", default="", metavar="AGENTS",
                    help="comma-separated agents every other agent is also compared with, "
                         "paired by seed (a column each), e.g. mle_gibbs_pi0")
    lb.add_argument("--workers", type=int, default=1,
                    help="run jobs in parallel on a local Ray instance with this many workers "
                         "(needs the 'distributed' extra)")
    lb.add_argument("--address", default=None,
                    help="attach to an existing Ray cluster ('auto' or ray://host:port)")
    lb.add_argument("--oracle-service", action="store_true",
                    help="run each run's oracle, ledger and judge in a Ray actor: the agent's "
                         "process never holds the gold reward (implies Ray)")
    lb.add_argument("--oracle-gpus", type=float, default=0.0, metavar="N",
                    help="GPUs for each oracle-service actor (a large gold reward model)")
    lb.add_argument("--include-external", action="store_true",
                    help="add the external rows of rlhf-zoo eval --model (same seeds)")
    su = sub.add_parser("suite", formatter_class=fmt, epilog=_EPILOG,
                        help="the diagnostic suite: families of exact instances, one property "
                             "varied each, every agent paired by seed",
                        description="Run every agent on every cell of each family (an exact env "
                                    "with one keyword varied over a grid) in the online "
                                    "setting at equal labels, then write suite.md, suite.json, "
                                    "capabilities.png and heatmaps.png (agents/zoo/suite.py).")
    su.add_argument("--families", default="small",
                    help="'small' (exploration, coverage, noise, budget), 'all', or a "
                         "comma-separated list of: exploration, hidden, coverage, noise, "
                         "budget, eta, dimension, alignment")
    su.add_argument("--agents", default=None,
                    help="comma-separated agents (default: mle_gibbs_pi0, mle_gibbs_uniform, "
                         "mle_gibbs_design, pessimistic_gibbs_design, gshf_online, "
                         "thompson_gibbs, adaptive_design_gibbs)")
    su.add_argument("--baseline", default="mle_gibbs_uniform",
                    help="the agent the heat maps compare with (default mle_gibbs_uniform)")
    su.add_argument("--seeds", default="10", metavar="SEEDS",
                    help="as the leaderboard's --seeds (default 10: seeds 0-9)")
    su.add_argument("--workers", type=int, default=1,
                    help="run jobs on a local Ray instance with this many workers")
    su.add_argument("--runs-dir", default="runs/suite", metavar="DIR",
                    help="where run folders go (default: runs/suite)")
    su.add_argument("--out", default=None, metavar="DIR",
                    help="output folder (default RUNS_DIR/report)")
    su.add_argument("--overwrite", action="store_true",
                    help="replace existing run folders (only folders this tool made)")
    return parser


def _suite(args: argparse.Namespace, command: str) -> int:
    import time

    from agents.zoo import suite
    from agents.zoo.leaderboard import agent_names
    from rlhf_env.errors import InvalidArgumentError

    check_output_dir(args.runs_dir, "--runs-dir")
    check_output_dir(args.out, "--out")
    fams = suite.families(args.families)
    names = (list(suite.DEFAULT_AGENTS) if args.agents is None
             else agent_names(args.agents, suite.FAMILIES[fams[0]].env_id))
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"--agents {args.agents}: an agent is named twice")
    if args.baseline not in names:
        raise InvalidArgumentError(f"--baseline {args.baseline} is not among the agents {names}")
    if args.workers < 1:
        raise InvalidArgumentError(f"--workers must be >= 1, got {args.workers}")
    seeds = parse_seeds(args.seeds)
    suite.plan(fams, names, seeds)  # every run resolved (and checked) before the first starts
    start = time.perf_counter()
    scores, failures = suite.run_suite(fams, names, seeds, runs=args.runs_dir,
                                       overwrite=args.overwrite, workers=args.workers,
                                       progress=_progress(args), command=command)
    out = Path(args.out or Path(args.runs_dir) / "report")
    summary = suite.write_suite(scores, out, baseline=args.baseline, seeds=seeds,
                                command=command, wall_s=time.perf_counter() - start)
    for a, v in sorted(summary["item3"].items()):
        if not v["cells"]:
            print(f"{a}: no finished cell")
            continue
        print(f"{a}: {'never' if not v['below'] else 'significantly'} below the best design "
              f"baseline{'' if not v['below'] else ' in ' + ', '.join(v['below'])}; above it "
              f"in {', '.join(v['above_families']) or 'no family'}")
    print(f"wrote {out / 'suite.md'}, {out / 'suite.json'}, capabilities.png, heatmaps.png")
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    return 1 if failures else 0


def _list() -> None:
    import agents
    import rlhf_env

    print("Environments:")
    for env_id in rlhf_env.list_envs():
        print(f"  {env_id:<22} {rlhf_env.spec(env_id).description}")
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


def _progress(args: argparse.Namespace) -> bool | None:
    """tqdm bars: off with -q, else only on a terminal."""
    return False if args.quiet else None


def _run(args: argparse.Namespace, command: str) -> int:
    from agents.zoo.config import parse_overrides, resolve

    if args.command == "list":
        _list()
        return 0
    if args.command == "suite":
        return _suite(args, command)
    if args.command == "eval":
        from rlhf_env.errors import InvalidArgumentError

        options = parse_overrides(args.eval_kwargs, "--eval-kwargs")
        if args.model is not None:
            from agents.zoo.external import evaluate_external

            if args.run_dir is not None or args.env is None:
                raise InvalidArgumentError("--model evaluates a checkpoint on --env ID; give no "
                                           "run folder with it")
            check_output_dir(args.runs_dir, "--runs-dir")
            rows = evaluate_external(
                args.model, args.env, None if args.seeds is None else parse_seeds(args.seeds),
                runs=args.runs_dir,
                name=args.name, env_kwargs=parse_overrides(args.env_kwargs, "--env-kwargs"),
                oracle=args.oracle, eval_options=options, labels=args.labels,
                allow_tokenizer_mismatch=args.allow_tokenizer_mismatch)
            for r in rows:
                print(f"{r['agent']} seed {r['seed']}:")
                _print_summary(r)
            return 0
        if args.run_dir is None:
            raise InvalidArgumentError("eval needs a run folder, or --model PATH --env ID")
        from agents.zoo.run import evaluate_run

        result = evaluate_run(args.run_dir, **options)
        print(f"{args.run_dir}:")
        _print_summary(result)
        return 0
    env_kwargs = parse_overrides(args.env_kwargs, "--env-kwargs")
    check_output_dir(args.runs_dir, "--runs-dir")
    check_output_dir(args.tensorboard_log, "--tensorboard-log")
    check_output_dir(getattr(args, "out", None), "--out")
    if args.command == "train":
        from agents.zoo.run import run_dir, train_run

        cfg = resolve(args.agent, args.env, args.seed, env_kwargs=env_kwargs, setting=args.setting,
                      oracle=args.oracle,
                      hyperparams=parse_overrides(args.hyperparams, "--hyperparams"))
        result = train_run(cfg, args.runs_dir, resume=args.resume, overwrite=args.overwrite,
                           tensorboard_log=args.tensorboard_log, command=command,
                           progress=_progress(args))
        print(f"{run_dir(args.runs_dir, args.env, args.agent, args.seed, args.oracle)}:")
        _print_summary(result)
        return 0
    import rlhf_env
    from agents.zoo.leaderboard import agent_names, run_leaderboard, write_leaderboard
    from rlhf_env.errors import InvalidArgumentError

    env_id = rlhf_env.spec(args.env).id
    seeds = parse_seeds(args.seeds)
    if args.workers < 1:
        raise InvalidArgumentError(f"--workers must be >= 1, got {args.workers}")
    names = agent_names(args.agents, env_id)
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"--agents {args.agents}: an agent is named twice")
    if not names:
        raise InvalidArgumentError(
            f"no agent has an entry for {env_id} in zoo_configs/; name them with --agents a,b "
            "(they run with their 'default' entry)")
    versus = [v.strip() for v in args.versus.split(",") if v.strip()]
    if set(versus) - set(names):
        raise InvalidArgumentError(
            f"--versus {args.versus}: {sorted(set(versus) - set(names))} not among this "
            f"leaderboard's agents {names}")
    suffix = f"-{args.oracle}" if args.oracle else ""
    out = Path(args.out or Path(args.runs_dir) / "leaderboards" / f"{env_id}{suffix}")
    results, failures = run_leaderboard(
        env_id, names, seeds, runs=args.runs_dir, env_kwargs=env_kwargs,
        setting=args.setting, oracle=args.oracle, overwrite=args.overwrite,
        tensorboard_log=args.tensorboard_log, command=command, progress=_progress(args),
        workers=args.workers, address=args.address, sealed=args.oracle_service,
        oracle_gpus=args.oracle_gpus)
    if args.include_external:
        from agents.zoo.external import external_results

        results.update(external_results(args.runs_dir, env_id, seeds, args.oracle))
    if any(results.values()):
        report = write_leaderboard(env_id, results, out, runs=args.runs_dir, command=command,
                                   oracle=args.oracle, versus=versus)
        print(report["table"])
        print(f"\nwrote {out / 'leaderboard.md'}, {out / 'leaderboard.json'} and "
              + ", ".join(Path(f).name for f in report["figures"]))
    for f in failures:
        print(f"error: {f}", file=sys.stderr)
    return 1 if failures else 0


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _logging(args: argparse.Namespace) -> None:
    """Lines for runs and builds when not on a terminal (bars show there instead)."""
    from rlhf_env.progress import on_terminal

    if args.quiet:
        level = logging.ERROR
    elif args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose or not on_terminal():
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("rlhf_env", "agents"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a user error or failed runs, 130 interrupted)."""
    from rlhf_env.errors import RLHFEnvError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    _logging(args)
    command = "rlhf-zoo " + shlex.join(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)  # kill -> the session is recorded
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
