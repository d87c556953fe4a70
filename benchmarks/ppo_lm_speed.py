"""Token-level PPO, both rollout paths in one run: tokens/s, peak memory, gold reward and KL.

    OMP_NUM_THREADS=1 python benchmarks/ppo_lm_speed.py [--out results.json] [--skip ...]

``rollout="cached"`` (one forward pass per sequence: a KV cache in rollouts, one
teacher-forced pass per segment for pi0 and in every PPO epoch) against
``rollout="per_state"`` (every state encoded from scratch), same seeds, same settings.

1. ``tiny``: throughput on TinyInstruct-v0, default size (its pi0: 4 layers x 128; the
   agent's default PPO settings: 16 episodes x 32 steps, minibatches of 64 tokens, 4
   epochs, responses of up to 16 tokens).
2. ``gpt2``: throughput of a GPT-2-sized model (12 layers x 768, byte vocabulary: 85.6M
   parameters, randomly initialised, as ``benchmarks/lm_device.py`` builds it; prompts of
   128 tokens, responses of 32) in float32, on ``--gpt2-episodes`` episodes per rollout.
   The per-state path is slow here: it runs ``--gpt2-per-state-iterations`` rollouts.
3. ``gold``: gold reward and KL to pi0 of the ``ppo`` agent after the same number of PPO
   tokens on both paths (TinyInstruct-v0 small, offline: 1,024 BT-labelled pairs of pi0,
   one reward-model fit, ``--gold-tokens`` PPO tokens), seeds 0-2, with the run's wall time.

In 1 and 2 the reward is the response's length in characters (no reward model: PPO's own
cost), kl_coef 0.1. PPO tokens/s counts the tokens of a timed ``learn`` (rollouts +
updates) over its wall time, best of ``rounds`` rounds that alternate the two paths (load
from other processes only slows a round down). Peak memory is the peak of torch-allocated
CPU memory within each phase above its level when the phase began (the profiler's
allocation events), per token of the phase's batch: the rollout's (episodes x steps; the
phase includes pi0's pass, in chunks of 64 states or segments) and the update's minibatch
(``batch_size``). Adam's state is allocated before (one zero-gradient step: weights
unchanged), so the update's figure is activations and gradients.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import agents
import rlhf_env
from agents.algorithms.ppo import ROLLOUTS, PPOConfig
from agents.algorithms.ppo_lm import make_lm_ppo
from rlhf_env.models.tiny import TinyLMConfig, build_tiny_lm, byte_tokenizer
from rlhf_env.policies import CausalLMPolicy

RESULTS: dict[str, Any] = {}
PARTS = ("tiny", "gpt2", "gold")


def report(name: str, value: Any) -> None:
    RESULTS[name] = value
    print(f"{name}: {value}", flush=True)


# -- time and peak memory of each phase -----------------------------------------------------

PHASES = ("rollout", "update")


def instrument(model: Any) -> dict[str, float]:
    """Time each rollout and update of an SB3 ``model`` and label them for the profiler.

    Returns the tally the following ``learn`` calls add their seconds to.
    """
    tally = {phase: 0.0 for phase in PHASES}

    def wrap(phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            with torch.profiler.record_function(f"ppo_{phase}"):
                out = fn(*args, **kwargs)
            tally[phase] += time.perf_counter() - t
            return out
        return run

    model.collect_rollouts = wrap("rollout", model.collect_rollouts)
    model.train = wrap("update", model.train)
    return tally


def peak_memory(prof: Any) -> dict[str, float]:
    """Peak torch-allocated CPU memory (MiB) within each labelled phase of a profile.

    From the profiler's allocation events: the running total of allocated bytes, its
    highest point within a phase minus its value when the phase began; the largest over
    the phase's occurrences.
    """
    events = prof.profiler.kineto_results.events()
    mem = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    times = np.array([t for t, _ in mem], dtype=np.int64)
    total = np.cumsum([b for _, b in mem]) if mem else np.zeros(0)
    peaks = {phase: 0.0 for phase in PHASES}
    for e in events:
        phase = e.name().removeprefix("ppo_")
        if phase in peaks and e.name().startswith("ppo_"):
            lo, hi = np.searchsorted(times, e.start_ns()), np.searchsorted(times, e.end_ns(), "right")
            if hi > lo:
                base = total[lo - 1] if lo else 0
                peaks[phase] = max(peaks[phase], float(total[lo:hi].max() - base) / 2**20)
    return peaks


def allocate_adam_state(model: Any) -> None:
    """One Adam step with zero gradients: the optimiser's state exists, the weights are unchanged."""
    for p in model.policy.parameters():
        p.grad = torch.zeros_like(p)
    model.policy.optimizer.step()
    model.policy.optimizer.zero_grad(set_to_none=True)


def length_reward(prompts: list[str], responses: list[str]) -> np.ndarray:
    return np.array([float(len(r)) for r in responses])


# -- throughput -----------------------------------------------------------------------------

def throughput(name: str, policy: CausalLMPolicy, prompts: list[str], settings: dict[str, Any],
               iterations: dict[str, int], rounds: int, warmup: int, profile_timed: bool) -> None:
    """PPO tokens/s, phase times and peak memory of both paths on the same settings.

    Both models are built first; then ``rounds`` rounds each time ``iterations[path]``
    rollouts+updates of each path in turn (the best round counts: other load on the machine
    only slows a round down). Memory comes from the profiled timed rounds if
    ``profile_timed`` (its overhead is negligible beside large matmuls), else from one
    more, profiled and untimed, iteration.
    """
    ref = policy.copy(frozen=True)
    models, tallies, best = {}, {}, {}
    for path in ROLLOUTS:
        c = PPOConfig.from_dict({**settings, "rollout": path})
        model, envs = make_lm_ppo(policy.trainable_copy(), ref, prompts, kl_coef=0.1, config=c,
                                  seed=0)
        for e in envs:
            e.reward_fn = length_reward
        allocate_adam_state(model)
        if warmup:
            model.learn(total_timesteps=warmup * model.n_steps * model.n_envs)
        models[path], tallies[path], best[path] = model, instrument(model), float("inf")
    per_rollout = settings["n_steps"] * settings["n_envs"]
    profiles: dict[str, Any] = {}
    for _ in range(rounds):
        for path, model in models.items():
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                          profile_memory=True)
            with prof if profile_timed else contextlib.nullcontext():
                t = time.perf_counter()
                model.learn(total_timesteps=iterations[path] * per_rollout,
                            reset_num_timesteps=False)
                best[path] = min(best[path], time.perf_counter() - t)
            if profile_timed:
                profiles[path] = prof
    rate = {}
    for path, model in models.items():
        tokens = iterations[path] * per_rollout
        rate[path] = tokens / best[path]
        tally = tallies[path]
        report(f"{name}/{path}/timed_tokens", f"{rounds} x {tokens}")
        report(f"{name}/{path}/ppo_tokens_per_s", round(rate[path], 2))
        report(f"{name}/{path}/rollout_tokens_per_s", round(rounds * tokens / tally["rollout"], 2))
        report(f"{name}/{path}/update_share_of_time", round(
            tally["update"] / (tally["update"] + tally["rollout"]), 3))
        if not profile_timed:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                        profile_memory=True) as prof:
                model.learn(total_timesteps=per_rollout, reset_num_timesteps=False)
            profiles[path] = prof
        peaks = peak_memory(profiles[path])
        for phase, per in (("rollout", per_rollout), ("update", settings["batch_size"])):
            report(f"{name}/{path}/{phase}_peak_mib", round(peaks[phase], 1))
            report(f"{name}/{path}/{phase}_peak_kib_per_token", round(1024 * peaks[phase] / per, 1))
    report(f"{name}/speedup_cached_over_per_state", round(rate["cached"] / rate["per_state"], 1))
    gen = torch.Generator().manual_seed(0)
    batch, new = prompts[:settings["n_envs"]], settings["max_new_tokens"]
    t = time.perf_counter()
    out = policy.sample(batch, n=1, generator=gen, max_new_tokens=new)
    toks = sum(len(policy.encode(r[0])) + 1 for r in out)
    report(f"{name}/sample_tokens_per_s_same_batch", round(toks / (time.perf_counter() - t), 1))


def tiny(args: argparse.Namespace) -> None:
    env = rlhf_env.make("TinyInstruct-v0", size="default", seed=0)
    u = env.unwrapped
    settings = {"max_new_tokens": u.reference.max_new_tokens, "n_envs": 16, "n_steps": 32,
                "batch_size": 64, "n_epochs": 4}
    report("tiny/params_M", round(sum(p.numel() for p in u.reference.parameters()) / 1e6, 2))
    throughput("tiny", u.reference, list(u.train_prompts), settings,
               {"cached": 4, "per_state": 1}, rounds=3, warmup=1, profile_timed=False)


def gpt2(args: argparse.Namespace) -> None:
    cfg = TinyLMConfig(n_layer=12, n_embd=768, n_head=12, n_positions=512, seed=0)
    policy = CausalLMPolicy(build_tiny_lm(cfg), byte_tokenizer(), device="cpu", batch_size=32)
    report("gpt2/params_M", round(sum(p.numel() for p in policy.parameters()) / 1e6, 1))
    rng = np.random.default_rng(0)
    prompts = ["".join(rng.choice(list("abcdefgh "), 128)) for _ in range(64)]
    n = args.gpt2_episodes
    settings = {"max_new_tokens": 32, "max_prompt_tokens": 128, "n_envs": n, "n_steps": 32,
                "batch_size": 32 * n, "n_epochs": 4, "learning_rate": 1e-5}
    throughput("gpt2", policy, prompts, settings,
               {"cached": args.gpt2_cached_iterations,
                "per_state": args.gpt2_per_state_iterations}, rounds=1, warmup=0,
               profile_timed=True)


def gold(args: argparse.Namespace) -> None:
    rows: dict[str, list[tuple[float, float, float]]] = {p: [] for p in ROLLOUTS}
    for seed in (0, 1, 2):
        env = rlhf_env.make("TinyInstruct-v0", size="small", setting="offline", n_offline=1024,
                            n_train_prompts=1024, n_eval_prompts=128, seed=seed)
        base = rlhf_env.evaluate(env.unwrapped.reference, env, n_samples=4, seed=0)
        report(f"gold/seed{seed}/pi0_gold", round(base["gold_reward"], 3))
        for path in ROLLOUTS:
            t = time.perf_counter()
            agent = agents.make("ppo", env, seed=seed, progress=False, iterations=1,
                                timesteps_per_iteration=args.gold_tokens, rollout=path).learn()
            wall = time.perf_counter() - t
            ev = rlhf_env.evaluate(agent.policy, env, n_samples=4, seed=0)
            rows[path].append((ev["gold_reward"], ev["kl"], wall))
            report(f"gold/seed{seed}/{path}", {"gold": round(ev["gold_reward"], 3),
                                               "kl": round(ev["kl"], 3),
                                               "learn_s": round(wall, 1)})
    for path, r in rows.items():
        a = np.array(r)
        report(f"gold/{path}/mean_sd", {
            "gold": [round(float(a[:, 0].mean()), 3), round(float(a[:, 0].std(ddof=1)), 3)],
            "kl": [round(float(a[:, 1].mean()), 3), round(float(a[:, 1].std(ddof=1)), 3)],
            "learn_s": round(float(a[:, 2].mean()), 1)})
    diff = np.array(rows["cached"])[:, 0] - np.array(rows["per_state"])[:, 0]
    report("gold/cached_minus_per_state", {"mean": round(float(diff.mean()), 3),
                                           "sd": round(float(diff.std(ddof=1)), 3)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip", default="", help=f"comma-separated parts: {', '.join(PARTS)}")
    ap.add_argument("--gpt2-episodes", type=int, default=1, help="episodes per rollout (gpt2)")
    ap.add_argument("--gpt2-cached-iterations", type=int, default=4)
    ap.add_argument("--gpt2-per-state-iterations", type=int, default=1)
    ap.add_argument("--gold-tokens", type=int, default=8192)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(PARTS):
        ap.error(f"--skip takes {', '.join(PARTS)}; got {', '.join(sorted(skip - set(PARTS)))}")
    report("machine", f"cpu, torch threads {torch.get_num_threads()}")
    t = time.perf_counter()
    for name, part in (("tiny", tiny), ("gpt2", gpt2), ("gold", gold)):
        if name not in skip:
            part(args)
    report("total_s", round(time.perf_counter() - t, 1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
