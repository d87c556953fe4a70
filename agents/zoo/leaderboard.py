"""Multi-seed leaderboards: train (or reuse) runs, then a table, a JSON file and plots.

Every entry is the mean over seeds with a 95% t-interval; beside it, the paired
comparisons of :mod:`agents.zoo.stats` — each agent's per-seed difference to pi0 and to
the best agent (a seed changes the whole instance, so only paired intervals separate
agents), the interquartile mean with its bootstrap interval, and the probability of
improvement over pi0. Every row states the labels the agent used (offline pairs it
learned from plus queries it paid for).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from agents.zoo.config import RunConfig, resolve
from agents.zoo.run import finished_earlier, run_dir, train_run
from agents.zoo.stats import METRICS, aggregate, comparisons, score_key

__all__ = ["ORDER", "agent_names", "plan_jobs", "run_leaderboard", "table", "write_leaderboard"]

log = logging.getLogger("agents")

# canonical row order when ``--agents all``: anchors, offline, online, theory, PPO
ORDER = ("reference", "best_of_n", "dpo", "dpo_pi0", "rso", "multi_step_rso", "iterative_dpo",
         "mle_gibbs", "mle_gibbs_pi0", "pessimistic_gibbs", "gshf_online", "gshf_hybrid", "ppo")


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


def plan_jobs(env_id: str, names: Sequence[str], seeds: Sequence[int], *,
              env_kwargs: dict[str, Any] | None = None, setting: str | None = None,
              oracle: str | None = None) -> list[RunConfig]:
    """Every (agent, seed) run config, resolved and checked before any job starts."""
    return [resolve(a, env_id, s, env_kwargs=env_kwargs, setting=setting, oracle=oracle)
            for a in names for s in seeds]


def _line(i: int, n: int, cfg: RunConfig, result: dict[str, Any] | None, wall: float,
          error: str | None = None, reused: Path | None = None) -> str:
    what = f"[{i}/{n}] {cfg.agent} seed {cfg.seed}"
    if error is not None:
        return f"{what} failed after {wall:.1f} s: {error}"
    key = "normalized_score" if "normalized_score" in result else "objective"
    done = f"reused {reused} (finished earlier)" if reused is not None else f"done in {wall:.1f} s"
    return f"{what} {done}: {key} {result[key]:.4f}"


def run_leaderboard(env_id: str, names: Sequence[str], seeds: Sequence[int], *,
                    runs: str | Path = "runs", env_kwargs: dict[str, Any] | None = None,
                    setting: str | None = None, oracle: str | None = None,
                    overwrite: bool = False, tensorboard_log: str | Path | None = None,
                    progress: bool | None = None, command: str = "", workers: int = 1,
                    address: str | None = None, sealed: bool = False, oracle_gpus: float = 0.0
                    ) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Train every (agent, seed) that has no finished run; returns (results, failures).

    With ``workers > 1``, an ``address`` or ``sealed`` the jobs run as Ray tasks
    (:mod:`agents.zoo.distributed`; ``sealed``: each run's oracle, ledger and judge in an
    actor); the results are the same.
    """
    jobs = plan_jobs(env_id, names, seeds, env_kwargs=env_kwargs, setting=setting,
                     oracle=oracle)
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in names}
    failures: list[str] = []
    if workers > 1 or address is not None or sealed:
        from agents.zoo.distributed import run_jobs

        outcomes = run_jobs(jobs, runs=str(runs), overwrite=overwrite,
                            tensorboard_log=tensorboard_log, command=command, workers=workers,
                            address=address, progress=progress, sealed=sealed,
                            oracle_gpus=oracle_gpus)
    else:
        outcomes = _run_sequential(jobs, runs, overwrite, tensorboard_log, command, progress)
    for cfg, result, error in outcomes:
        if error is None:
            results[cfg.agent].append(result)
        else:
            failures.append(f"{cfg.agent} seed {cfg.seed} "
                            f"({run_dir(runs, cfg.env_id, cfg.agent, cfg.seed, cfg.oracle)}): {error}")
    for a in results:  # the same order whatever order the jobs finished in
        results[a].sort(key=lambda r: r["seed"])
    return results, failures


def _run_sequential(jobs: list[RunConfig], runs: str | Path, overwrite: bool,
                    tensorboard_log: str | Path | None, command: str,
                    progress: bool | None) -> list[tuple[RunConfig, Any, str | None]]:
    from rlhf_env.progress import bar

    out: list[tuple[RunConfig, Any, str | None]] = []
    # no ETA: runs of one leaderboard differ in length by orders of magnitude
    pbar = bar(total=len(jobs), desc="leaderboard", enabled=progress, leave=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs [{elapsed}]")
    for i, cfg in enumerate(jobs, start=1):
        pbar.set_postfix_str(f"{cfg.agent} seed {cfg.seed}")
        start = time.perf_counter()
        reused = None
        try:
            reused = None if overwrite else finished_earlier(cfg, runs)
            result = train_run(cfg, runs, resume=not overwrite, overwrite=overwrite,
                               tensorboard_log=tensorboard_log, progress=False, command=command)
            out.append((cfg, result, None))
            log.info(_line(i, len(jobs), cfg, result, time.perf_counter() - start,
                           reused=reused))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # report every failing run, then exit non-zero
            error = f"{type(e).__name__}: {e}"
            out.append((cfg, None, error))
            log.warning(_line(i, len(jobs), cfg, None, time.perf_counter() - start, error))
        pbar.update(1)
    pbar.close()
    return out


def _cell(m: dict[str, Any] | None, digits: int) -> str:
    if m is None:
        return "–"
    mean = round(m["mean"], digits) + 0.0  # no "-0.000"
    if math.isnan(m["ci95"]) or round(m["ci95"], digits) == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {m['ci95']:.{digits}f}"


def _interval(p: dict[str, Any] | None) -> str:
    if not p or math.isnan(p["mean"]):
        return "–"
    if math.isnan(p["ci95"]):
        return f"{p['mean']:+.3f}"
    mark = " ✓" if p["low"] > 0 else (" ✗" if p["high"] < 0 else "")
    return f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]{mark}"


def table(agg: dict[str, dict[str, Any]], comp: dict[str, Any] | None = None) -> str:
    """A markdown table, best score first, with the paired comparisons when given (the
    "vs pi0" column only when the board has a ``reference`` row to pair with)."""
    key = score_key(agg)
    cols = [(k, t, d) for k, t, d in METRICS if any(k in e for e in agg.values())]
    versus = list(comp.get("versus", ())) if comp else []
    pi0 = "reference" in agg
    extra = ((["vs pi0 (paired)"] if pi0 else []) + ["vs best (paired)"]
             + [f"vs {v} (paired)" for v in versus] + ["IQM [95%]"] if comp else [])
    rows = []
    for a in sorted(agg, key=lambda a: -agg[a][key]["mean"]):
        e = agg[a]
        cells = [a, str(len(e["seeds"]))] + [_cell(e.get(k), d) for k, _, d in cols]
        if comp:
            c = comp["agents"][a]
            q = c["iqm"]
            cells += [_interval(c.get("vs_reference"))] if pi0 else []
            cells += ["best" if a == comp["best"] else _interval(c.get("vs_best"))]
            cells += [_interval(c.get(f"vs_{v}")) for v in versus]
            cells += [f"{q['iqm']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"]
        rows.append(cells)
    # the cells are formatted above: numparse off, or tabulate would reformat "0.980" as 0.98
    return tabulate(rows, ["agent", "seeds"] + [t for _, t, _ in cols] + extra,
                    tablefmt="github", disable_numparse=True)


def write_leaderboard(env_id: str, results: dict[str, list[dict[str, Any]]], out: str | Path,
                      *, runs: str | Path = "runs", command: str = "",
                      oracle: str | None = None, versus: Sequence[str] = ()) -> dict[str, Any]:
    """Write ``leaderboard.md``, ``leaderboard.json`` and the PNG plots into ``out``.

    ``versus``: agents every other agent is also compared with, paired by seed (a column
    each), besides pi0 and the best agent."""
    from agents.files import report_folder

    out = Path(out)
    with report_folder(out, last=("leaderboard.json", "leaderboard.md")) as tmp:
        report = _write_leaderboard(env_id, results, tmp, runs=runs, command=command,
                                    oracle=oracle, versus=versus)
    report["figures"] = [str(out / Path(f).name) for f in report["figures"]]
    return report


def _write_leaderboard(env_id: str, results: dict[str, list[dict[str, Any]]], out: Path,
                       *, runs: str | Path, command: str, oracle: str | None,
                       versus: Sequence[str]) -> dict[str, Any]:
    from agents.zoo import plots

    agg = aggregate(results)
    if not agg:
        raise RuntimeError("no finished runs to put on the leaderboard")
    comp = comparisons(agg, versus)
    seeds = sorted({s for e in agg.values() for s in e["seeds"]})
    md = table(agg, comp)
    title = f"{env_id}, oracle {oracle or 'bt'}"
    figs = plots.make_all(title, env_id, agg, comp, results, out, runs=runs)
    key = comp["score"]
    text = [f"# Leaderboard: {title}", "",
            f"Mean ± 95% t-interval over seeds {seeds}; exact metrics on exact envs, Monte Carlo "
            "estimates on the held-out prompts otherwise. Objective J = gold reward − eta · KL; "
            "labels = offline pairs the agent learned from + queries it paid for. "
            f"The 'vs' columns are the mean per-seed difference in {key} with its 95% "
            "t-interval (✓: above 0, ✗: below 0); IQM is the interquartile mean over seeds with "
            "a percentile-bootstrap interval."
            + ("" if "reference" in agg else " No 'vs pi0' column: the board has no "
               "'reference' row (add reference to --agents)."), "", md, ""]
    if command:
        text += ["Made by:", "", f"    {command}", ""]
    text += [f"![{f.stem}]({f.name})" for f in figs]
    (out / "leaderboard.md").write_text("\n".join(text) + "\n")
    (out / "leaderboard.json").write_text(json.dumps(
        {"env_id": env_id, "oracle": oracle or "bt", "seeds": seeds, "command": command,
         "agents": agg, "comparisons": comp}, indent=1, default=str))
    return {"table": md, "aggregate": agg, "comparisons": comp,
            "figures": [str(f) for f in figs]}
