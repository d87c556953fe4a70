"""Multi-seed leaderboards: train (or reuse) runs, then a table, a JSON file and plots.

Every entry is the mean over seeds with a 95% confidence interval
(:mod:`agents.zoo.stats`); one-seed entries have no interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.zoo.config import resolve
from agents.zoo.run import run_dir, train_run
from agents.zoo.stats import METRICS, aggregate

__all__ = ["ORDER", "agent_names", "run_leaderboard", "table", "write_leaderboard"]

# canonical row order when ``--agents all``: anchors, offline, online, theory, PPO
ORDER = ("reference", "best_of_n", "dpo", "rso", "multi_step_rso", "iterative_dpo",
         "mle_gibbs", "pessimistic_gibbs", "gshf_online", "gshf_hybrid", "ppo")
def agent_names(spec: str, env_id: str) -> list[str]:
    """``"all"``: every agent whose config file has an entry for ``env_id`` (as in
    rl-baselines3-zoo; the theory agents and PPO have none for language envs), in
    leaderboard order; or ``"a,b"`` (checked, run with the ``default`` entry if need be)."""
    import agents
    from agents.hyperparams import config_file, load_file

    if spec == "all":
        known = [a for a in agents.list_agents() if env_id in load_file(config_file(a))]
        return [a for a in ORDER if a in known] + [a for a in known if a not in ORDER]
    names = [a.strip() for a in spec.split(",") if a.strip()]
    for a in names:
        agents.get(a)  # unknown names: an error with the closest names
    return names


def run_leaderboard(env_id: str, names: Sequence[str], seeds: Sequence[int], *,
                    runs: str | Path = "runs", env_kwargs: dict[str, Any] | None = None,
                    setting: str | None = None, overwrite: bool = False,
                    tensorboard_log: str | Path | None = None, progress: bool | None = None,
                    command: str = "") -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Train every (agent, seed) that has no finished run; returns (results, failures)."""
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in names}
    failures: list[str] = []
    jobs = [(a, s) for a in names for s in seeds]
    bar = tqdm(jobs, desc=f"leaderboard {env_id}", disable=None if progress is None else not progress)
    for a, s in bar:
        bar.set_postfix(agent=a, seed=s)
        cfg = resolve(a, env_id, s, env_kwargs=env_kwargs, setting=setting)
        try:
            results[a].append(train_run(cfg, runs, resume=not overwrite, overwrite=overwrite,
                                        tensorboard_log=tensorboard_log, progress=False,
                                        command=command))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # report every failing run, then exit non-zero
            failures.append(f"{a} seed {s} ({run_dir(runs, env_id, a, s)}): {type(e).__name__}: {e}")
    return results, failures


def _cell(m: dict[str, Any] | None, digits: int) -> str:
    if m is None:
        return "–"
    mean = round(m["mean"], digits) + 0.0  # no "-0.000"
    if math.isnan(m["ci95"]) or round(m["ci95"], digits) == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {m['ci95']:.{digits}f}"


def table(agg: dict[str, dict[str, Any]]) -> str:
    """A markdown table, best objective first."""
    cols = [(k, t, d) for k, t, d in METRICS if any(k in e for e in agg.values())]
    lines = ["| agent | seeds | " + " | ".join(t for _, t, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for a in sorted(agg, key=lambda a: -agg[a]["objective"]["mean"]):
        e = agg[a]
        lines.append(f"| {a} | {len(e['seeds'])} | "
                     + " | ".join(_cell(e.get(k), d) for k, _, d in cols) + " |")
    return "\n".join(lines)


def write_leaderboard(env_id: str, results: dict[str, list[dict[str, Any]]], out: str | Path,
                      *, runs: str | Path = "runs", command: str = "") -> dict[str, Any]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and the PNG plots into ``out``."""
    from agents.zoo import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(results)
    if not agg:
        raise RuntimeError("no finished runs to put on the leaderboard")
    seeds = sorted({s for e in agg.values() for s in e["seeds"]})
    md = table(agg)
    figs = plots.make_all(env_id, agg, results, out, runs=runs)
    text = [f"# Leaderboard: {env_id}", "",
            f"Mean ± 95% confidence interval (t) over seeds {seeds}; exact metrics on exact "
            "envs, Monte Carlo estimates on the held-out prompts otherwise. Objective "
            "J = gold reward − eta · KL.", "", md, ""]
    if command:
        text += ["Made by:", "", f"    {command}", ""]
    text += [f"![{f.stem}]({f.name})" for f in figs]
    (out / "leaderboard.md").write_text("\n".join(text) + "\n")
    (out / "leaderboard.json").write_text(json.dumps(
        {"env_id": env_id, "seeds": seeds, "command": command, "agents": agg}, indent=1))
    return {"table": md, "aggregate": agg, "figures": [str(f) for f in figs]}
