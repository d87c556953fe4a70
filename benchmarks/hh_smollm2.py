"""The paper's HH-RLHF experiment in miniature, on a CPU: HH-RLHF-v0 with preset="smollm2".

    python benchmarks/hh_smollm2.py --data-dir ../shared/data/hh-rlhf [--seed 0]
        [--out leaderboards/HH-RLHF-v0-smollm2] [--agents reference,dpo,rso,iterative_dpo]

pi0 = SmolLM2-135M-Instruct (its chat template), r* = a BT reward model fitted on human
labels of HH rows the env never uses as prompts (all-MiniLM-L6-v2; the env's docstring
gives its agreement with held-out human labels). Hybrid: ``--n-offline`` human-written HH
pairs (off-policy for pi0) + ``--budget`` queries labelled by the BT oracle over r*.

Agents, every trained policy a LoRA adapter over pi0 (r 16, alpha 32, peft's default
targets: the attention's q and v projections):

* ``dpo``: offline DPO on the human pairs;
* ``dpo_pi0`` (not in the default list; ``--agents ...,dpo_pi0``): the same plus the query
  budget spent on pairs of pi0 samples (offline learning at equal labels with iterative
  DPO);
* ``rso``: statistical rejection sampling from pi0 under a BT reward model the agent fits
  on the human pairs (on pi0's own backbone, LoRA), then DPO on the accepted pairs;
* ``iterative_dpo``: 3 iterations of m = budget / 3 prompts, main agent vs the
  rejection-sampling enhancer (best vs worst of n samples of pi_t by DPO's implicit
  reward), RLHFlow's recipe (each iteration from and against the previous iterate, on its
  new pairs; iteration 0 also on the human pairs); evaluated after every iteration, so the
  table shows gold reward, KL, J, win rate and response length (tokens) per iteration.

Every evaluation uses the same held-out prompts and the same sampling seed, so each agent
is compared with pi0 **paired by prompt** (the mean per-prompt difference of J with its
95% t-interval): one seed of the whole instance, as the CPU allows. The wall time and the
peak resident memory of each run are recorded. Results go to ``<out>/results.json`` (one
entry per agent, reused when rerun: delete it to redo an agent) and ``<out>/leaderboard.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

AGENTS = ("reference", "dpo", "rso", "iterative_dpo")  # --agents may add dpo_pi0
LORA = {"r": 16, "alpha": 32.0}
DPO = {"lora": LORA, "learning_rate": 2e-4, "num_train_epochs": 1,
       "per_device_train_batch_size": 8, "rpo_alpha": 1.0, "max_length": 256,
       "max_prompt_length": 192}


def hyperparameters(name: str, budget: int, n_prompts: int) -> dict[str, Any]:
    if name == "reference":
        return {}
    if name == "dpo":
        return dict(DPO)
    if name == "dpo_pi0":
        return {**DPO, "query_pairs": budget}
    if name == "rso":
        return {**DPO, "n_candidates": 4, "n_accepted": 2, "n_prompts": n_prompts,
                "reward_model": {"lora": LORA, "steps": 32, "batch_size": 8,
                                 "learning_rate": 1e-4, "max_length": 256}}
    if name == "iterative_dpo":
        return {**DPO, "iterations": 3, "enhancer": "rejection_sampling", "n_samples": 4,
                "rs_reward": "implicit", "recipe": "rlhflow", "warm_start": False}
    raise ValueError(name)


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of a - b over prompts with its 95% t-interval."""
    from scipy import stats

    d = np.asarray(a) - np.asarray(b)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    return {"mean": float(d.mean()), "low": float(ci.low), "high": float(ci.high),
            "n": int(len(d))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--subset", default="harmless-base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-offline", type=int, default=128)
    parser.add_argument("--budget", type=int, default=96)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=2)
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--out", default="leaderboards/HH-RLHF-v0-smollm2")
    parser.add_argument("--smoke", action="store_true",
                        help="a minutes-long run of every code path (small gold RM, budgets)")
    args = parser.parse_args()
    if args.smoke:
        args.n_offline, args.budget, args.eval_prompts, args.eval_samples = 8, 6, 2, 1

    import torch

    import agents
    import rlhf_env

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    env_kwargs = {"preset": "smollm2", "data_dir": args.data_dir, "subset": args.subset,
                  "setting": "hybrid", "n_offline": args.n_offline,
                  "query_budget": args.budget, "n_eval_prompts": args.eval_prompts,
                  "seed": args.seed}
    if args.smoke:
        env_kwargs.update(max_new_tokens=8, gold_rm={"max_rows": 32, "epochs": 1,
                                                     "report_rows": 64})
    eval_kw = {"n_samples": args.eval_samples, "best_of_n": (), "seed": 1234,
               "per_prompt": True}
    print(f"torch threads {torch.get_num_threads()}; env {env_kwargs}", flush=True)
    for name in args.agents.split(","):
        if name in results:
            print(f"{name}: done before, reused", flush=True)
            continue
        start, cpu0 = time.perf_counter(), time.process_time()
        env = rlhf_env.make("HH-RLHF-v0", **env_kwargs)
        hp = hyperparameters(name, args.budget, 4 if args.smoke else 32)
        curve: list[dict[str, Any]] = []

        def each_round(agent: Any, info: dict[str, Any], env: Any = env,
                       curve: list = curve) -> None:
            if agent.name == "iterative_dpo":  # the per-iteration table (length trend)
                m = rlhf_env.evaluate(agent.policy, env, **eval_kw)
                curve.append({"iteration": info["iteration"] + 1,
                              "labels": agent.offline_labels_used + agent.queries_spent,
                              **{k: v for k, v in m.items() if k != "per_prompt"}})
                print(f"  {agent.name} iteration {info['iteration'] + 1}: J {m['objective']:.3f} "
                      f"gold {m['gold_reward']:.3f} KL {m['kl']:.3f} tokens "
                      f"{m['mean_tokens']:.1f}", flush=True)

        agent = agents.make(name, env, seed=args.seed, progress=False, **hp)
        agent.learn(callback=each_round)
        trained = time.perf_counter() - start
        m = rlhf_env.evaluate(agent.policy, env, **eval_kw)
        results[name] = {
            "hyperparameters": hp, "metrics": {k: v for k, v in m.items() if k != "per_prompt"},
            "per_prompt": m["per_prompt"], "curve": curve,
            "labels": agent.offline_labels_used + agent.queries_spent,
            "wall_s": round(time.perf_counter() - start, 1), "train_wall_s": round(trained, 1),
            "cpu_s": round(time.process_time() - cpu0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "gold_rm": env.unwrapped.data_report.get("gold_rm"),
        }
        results_file.write_text(json.dumps(results, indent=1))
        print(f"{name}: J {m['objective']:.3f} gold {m['gold_reward']:.3f} KL {m['kl']:.3f} "
              f"win {m['win_rate']:.3f} tokens {m['mean_tokens']:.1f} "
              f"({results[name]['wall_s']:.0f} s)", flush=True)
    write_table(results, out, env_kwargs, args)


def write_table(results: dict[str, Any], out: Path, env_kwargs: dict[str, Any],
                args: argparse.Namespace) -> None:
    if "reference" not in results:
        return
    ref = results["reference"]["per_prompt"]
    lines = [
        "# HH-RLHF-v0, preset smollm2: the paper's experiment in miniature",
        "",
        f"Command: `python benchmarks/hh_smollm2.py --data-dir {args.data_dir} --seed "
        f"{args.seed} --n-offline {args.n_offline} --budget {args.budget}` (CPU, 2 cores).",
        f"Env: {json.dumps({k: v for k, v in env_kwargs.items() if k != 'data_dir'})}; "
        f"evaluation on {args.eval_prompts} held-out prompts x {args.eval_samples} samples, "
        "one sampling seed for every agent; intervals are paired by prompt (one seed of the "
        "instance). Peak RSS is the process's maximum so far (the agents run one after "
        "another in one process); wall times include the env's build and the evaluation.",
        "",
        "| agent | J | gold reward | KL | win rate vs pi0 | tokens | labels | J - pi0 (paired by "
        "prompt) | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(results, key=lambda k: -results[k]["metrics"]["objective"])
    for name in order:
        r, m = results[name], results[name]["metrics"]
        d = paired(r["per_prompt"]["objective"], ref["objective"])
        vs = "–" if name == "reference" else (
            f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
            + (" ✓" if d["low"] > 0 else " ✗" if d["high"] < 0 else ""))
        lines.append(
            f"| {name} | {m['objective']:.3f} ± {m['objective_stderr']:.3f} | "
            f"{m['gold_reward']:.3f} | {m['kl']:.3f} | {m['win_rate']:.3f} | "
            f"{m.get('mean_tokens', float('nan')):.1f} | {r['labels']} | {vs} | "
            f"{r['wall_s']:.0f} | {r['peak_rss_mb']} |")
    curve = results.get("iterative_dpo", {}).get("curve") or []
    if curve:
        lines += ["", "iterative_dpo per iteration (the paper reports responses growing longer):",
                  "", "| iteration | labels | J | gold reward | KL | win rate | tokens |",
                  "|---|---|---|---|---|---|---|",
                  f"| 0 (pi0) | 0 | {results['reference']['metrics']['objective']:.3f} | "
                  f"{results['reference']['metrics']['gold_reward']:.3f} | 0.000 | 0.500 | "
                  f"{results['reference']['metrics']['mean_tokens']:.1f} |"]
        lines += [f"| {c['iteration']} | {c['labels']} | {c['objective']:.3f} | "
                  f"{c['gold_reward']:.3f} | {c['kl']:.3f} | {c['win_rate']:.3f} | "
                  f"{c['mean_tokens']:.1f} |" for c in curve]
    gold = results["reference"].get("gold_rm") or {}
    if gold:
        lines += ["", f"Gold RM: {gold['backbone']}, fitted on {gold['fit_rows']} human-labelled "
                  f"pairs; agreement with the human labels of {gold['held_rows']} held-out rows "
                  f"{gold['agreement_held']:.3f} (the best length-only rule, "
                  f"{gold['length_baseline']['rule']}: "
                  f"{gold['length_baseline']['agreement']:.3f})."]
    (out / "leaderboard.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
