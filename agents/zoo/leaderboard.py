"""Multi-seed leaderboards: train (or reuse) runs, then a table, a JSON file and plots.

Every entry is the mean over seeds with a 95% confidence interval (Student t,
mean ± t_{0.975, n-1} · sd / sqrt(n)); one-seed entries have no interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from agents.zoo.config import resolve
from agents.zoo.run import run_dir, train_run

__all__ = ["ORDER", "METRICS", "ci95", "aggregate", "run_leaderboard", "write_leaderboard"]

# canonical row order when ``--agents all``: anchors, offline, online, theory, PPO
ORDER = ("reference", "best_of_n", "dpo", "rso", "multi_step_rso", "iterative_dpo",
         "mle_gibbs", "pessimistic_gibbs", "gshf_online", "gshf_hybrid", "ppo")
# (key in eval.json, column title, digits)
METRICS = (("normalized_score", "normalized score", 3), ("objective", "objective J", 3),
           ("gold_reward", "gold reward", 3), ("kl", "KL", 3), ("win_rate", "win rate", 3),
           ("queries_used", "queries", 0), ("wall_s", "wall s", 1))
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086)


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t interval); the half-width is nan for one value."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    t = _T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96 + 2.4 / (len(v) - 1)
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def agent_names(spec: str, env_id: str) -> list[str]:
    """``"all"``: every agent whose config file has an entry for ``env_id`` (as in
    rl-baselines3-zoo; the theory agents and PPO have none for language envs), in
    leaderboard order; or ``"a,b"`` (checked, run with the ``default`` entry if need be)."""
    import agents
    from agents.zoo.config import config_dir, load_file

    if spec == "all":
        known = [a for a in agents.list_agents()
                 if (f := config_dir() / f"{a}.yml").is_file() and env_id in load_file(f)]
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


def aggregate(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per agent and metric: mean, 95% half-width and the per-seed values."""
    out: dict[str, dict[str, Any]] = {}
    for a, rows in results.items():
        if not rows:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
        for key in sorted({k for r in rows for k in r if isinstance(r[k], (int, float))}):
            vals = [float(r[key]) for r in rows if key in r]
            mean, half = ci95(vals)
            entry[key] = {"mean": mean, "ci95": half, "values": vals}
        out[a] = entry
    return out


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
