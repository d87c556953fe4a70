"""Where the CPU goes in one iterative-DPO iteration on HH-RLHF-v0 (preset smollm2).

    python benchmarks/lm_iteration.py --data-dir ../shared/data/hh-rlhf [--backend hf|vllm]
        [--out benchmarks/results/lm_iteration_<backend>.json]

The run of issue 28's table: hybrid (128 human pairs + 96 queries), iterative DPO with
RLHFlow's recipe (3 iterations of 32 prompts, best vs worst of 4 samples of pi_t by the
implicit reward, LoRA r 16), evaluated after every iteration on 32 held-out prompts x 2
samples (pi_t's and pi0's). CPU seconds (this process and its children, every thread)
are split by phase, the outermost phase counting: ``sampling`` (any policy's
``sample_sequences``), ``scoring`` (log-prob and KL forwards outside training),
``dpo_train`` (``agents.trainer.train_preferences``), ``gold_rm`` (the judge's gold
rewards) and ``other``. The figures of one iteration after the first (iteration 2:
pi_t is an adapter) are what the table reports.

It wraps functions by name, so the same script measures an older checkout too:
``PYTHONPATH=<old checkout> python benchmarks/lm_iteration.py ... --label before``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

HP = {"lora": {"r": 16, "alpha": 32.0}, "learning_rate": 2e-4, "num_train_epochs": 1,
      "per_device_train_batch_size": 8, "rpo_alpha": 1.0, "max_length": 256,
      "max_prompt_length": 192, "iterations": 3, "prompts_per_iteration": 32,
      "enhancer": "rejection_sampling",
      "n_samples": 4, "rs_reward": "implicit", "recipe": "rlhflow", "warm_start": False}


def cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Phases:
    """CPU seconds per phase; a call inside a phase counts for the outer phase."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.active: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str):
        if self.active is not None:
            yield
            return
        self.active, start = name, cpu()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + cpu() - start
            self.active = None

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)
        setattr(owner, attr, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--backend", default="hf")
    parser.add_argument("--label", default=None, help="name of this run (default: backend)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--iterations", type=int, default=2,
                        help="iterations to run (32 prompts each; the table is iteration 2)")
    args = parser.parse_args()
    label = args.label or args.backend
    out = Path(args.out or f"benchmarks/results/lm_iteration_{label}.json")

    import agents
    import agents.trainer
    import rlhf_env
    from rlhf_env.policies.causal_lm import CausalLMPolicy

    phases = Phases()
    phases.wrap(CausalLMPolicy, "sample_sequences", "sampling")
    for attr in ("token_log_probs", "sequence_log_probs", "token_kl", "score_samples",
                 "pair_log_probs"):
        phases.wrap(CausalLMPolicy, attr, "scoring")
    phases.wrap(agents.trainer, "train_preferences", "dpo_train")
    try:  # the judge moved between versions; wrap where it is
        from rlhf_env.judge import Judge  # type: ignore[attr-defined]
    except ImportError:
        from rlhf_env.judging import Judge
    phases.wrap(Judge, "gold_rewards", "gold_rm")
    import agents.algorithms.dpo as dpo_mod  # the agents import the trainer by name
    for mod in (dpo_mod,):
        if hasattr(mod, "train_preferences"):
            phases.wrap(mod, "train_preferences", "dpo_train")

    env_kwargs: dict[str, Any] = {"preset": "smollm2", "data_dir": args.data_dir,
                                  "subset": "harmless-base", "setting": "hybrid",
                                  "n_offline": 128, "query_budget": 96, "n_eval_prompts": 32,
                                  "seed": 0}
    if args.backend != "hf":
        env_kwargs["backend"] = args.backend
    t0, c0 = time.perf_counter(), cpu()
    env = rlhf_env.make("HH-RLHF-v0", **env_kwargs)
    build = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu() - c0, 1)}
    print(f"env built: {build}", flush=True)
    eval_kw = {"n_samples": 2, "best_of_n": (), "seed": 1234}
    rows: list[dict[str, Any]] = []
    mark = {"cpu": cpu(), "wall": time.perf_counter(), "phases": dict(phases.totals)}

    def each_round(agent: Any, info: dict[str, Any]) -> None:
        m = rlhf_env.evaluate(agent.policy, env, **eval_kw)
        now = {"cpu": cpu(), "wall": time.perf_counter(), "phases": dict(phases.totals)}
        split = {k: round(v - mark["phases"].get(k, 0.0), 1) for k, v in now["phases"].items()}
        total = now["cpu"] - mark["cpu"]
        split["other"] = round(total - sum(split.values()), 1)
        rows.append({"iteration": info["iteration"] + 1, "cpu_s": round(total, 1),
                     "wall_s": round(now["wall"] - mark["wall"], 1), "phases": split,
                     "objective": m["objective"], "gold_reward": m["gold_reward"],
                     "kl": m["kl"]})
        print(json.dumps(rows[-1]), flush=True)
        mark.update(now)

    hp = dict(HP, iterations=args.iterations)
    agents.make("iterative_dpo", env, seed=0, progress=False, **hp).learn(callback=each_round)
    result = {"label": label, "backend": args.backend, "env": {
        k: v for k, v in env_kwargs.items() if k != "data_dir"}, "hyperparameters": hp,
        "build": build, "iterations": rows, "torch_threads": __import__("torch").get_num_threads(),
        "load_avg_end": os.getloadavg(), "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
