"""The language-model path on a device: correctness against the CPU, then speed.

    python benchmarks/lm_device.py --device cuda [--dtype bfloat16] [--out results.json]

1. Consistency: a small GPT-2 (byte tokenizer) on ``--device`` in float32 against the
   same weights on the CPU: summed response log-probs of 64 TinyInstruct pairs (max
   absolute difference) and one DPO step's loss.
2. Agents end to end on ``--device``: ``dpo`` and the token-level ``ppo`` on
   TinyInstruct-v0 (small config), with the PPO ratio on the first minibatch of each
   update (must be 1) and the gold reward against pi0's.
3. Speed of a GPT-2-small-sized model (12 layers, 768 wide, 124M parameters with the
   byte vocabulary; randomly initialised, nothing downloaded) in ``--dtype``:
   ``log_prob`` over prompt+response pairs of 256 tokens (pairs/s, forward only and
   forward+backward) and batched sampling (new tokens/s, KV cache).

Prints one line per figure and writes them as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import agents
import rlhf_env
from agents.algorithms.ppo import PPOConfig
from agents.algorithms.ppo_lm import make_lm_ppo, watch_first_minibatch_ratios
from agents.data import PreferenceData
from agents.trainer import train_preferences
from rlhf_env.envs import tiny_tasks
from rlhf_env.models.tiny import TinyLMConfig, build_tiny_lm, byte_tokenizer
from rlhf_env.policies import CausalLMPolicy

RESULTS: dict[str, float | str] = {}


def report(name: str, value: float | str) -> None:
    RESULTS[name] = value
    print(f"{name}: {value}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pairs(n: int, seed: int = 0) -> PreferenceData:
    rng = np.random.default_rng(seed)
    data = PreferenceData()
    while len(data) < n:
        p = tiny_tasks.make_prompt(rng)
        a, b = tiny_tasks.demonstration(p, rng), tiny_tasks.demonstration(p, rng)
        if a != b:
            data.extend([p], [a], [b])
    return data


def consistency(device: str) -> None:
    cfg = TinyLMConfig(n_layer=2, n_embd=64, seed=0)
    cpu = CausalLMPolicy(build_tiny_lm(cfg), byte_tokenizer(), device="cpu")
    dev = CausalLMPolicy(build_tiny_lm(cfg), byte_tokenizer(), device=device)
    data = pairs(64)
    with torch.no_grad():
        a = cpu.log_prob(data.prompts, data.chosen)
        b = dev.log_prob(data.prompts, data.chosen).cpu()
    report("consistency/log_prob_max_abs_diff", float((a - b).abs().max()))
    losses = []
    for pol in (cpu, dev):
        ref = pol.trainable_copy().freeze()
        res = train_preferences(pol, ref, data, beta=0.1, per_device_train_batch_size=64,
                                num_train_epochs=1, learning_rate=1e-2, progress=False)
        with torch.no_grad():
            losses.append(float(pol.log_prob(data.prompts[:8], data.chosen[:8]).sum().cpu()))
        assert res.steps == 1
    report("consistency/logp_after_one_dpo_step_cpu", round(losses[0], 4))
    report("consistency/logp_after_one_dpo_step_device", round(losses[1], 4))


def agents_end_to_end(device: str) -> None:
    env = rlhf_env.make("TinyInstruct-v0", size="small", setting="offline", n_offline=1024,
                        n_train_prompts=1024, n_eval_prompts=128, seed=0, device=device)
    u = env.unwrapped
    report("agents/reference_device", str(u.reference.device))
    base = rlhf_env.evaluate(u.reference, env, n_samples=4, seed=0)["gold_reward"]
    report("agents/pi0_gold", round(base, 3))
    for name, kw in (("dpo", {"rpo_alpha": 1.0, "learning_rate": 1e-3, "num_train_epochs": 3}),
                     ("ppo", {"iterations": 1, "timesteps_per_iteration": 8192})):
        t = time.perf_counter()
        agent = agents.make(name, env, seed=0, progress=False, **kw).learn()
        report(f"agents/{name}_learn_s", round(time.perf_counter() - t, 1))
        report(f"agents/{name}_policy_device", str(agent.policy.device))
        ev = rlhf_env.evaluate(agent.policy, env, n_samples=4, seed=0)
        report(f"agents/{name}_gold", round(ev["gold_reward"], 3))
        report(f"agents/{name}_kl", round(ev["kl"], 3))
    # PPO ratio on the first minibatch of each update
    policy = u.reference.trainable_copy()
    c = PPOConfig.from_dict({"n_envs": 8, "n_steps": 16, "batch_size": 32, "n_epochs": 2})
    model, envs = make_lm_ppo(policy, u.reference, list(u.train_prompts), kl_coef=0.5, config=c,
                              seed=0)
    for e in envs:
        e.reward_fn = lambda p, r: np.array([float(len(x)) for x in r])
    ratios = watch_first_minibatch_ratios(model)
    model.learn(total_timesteps=3 * c.n_steps * c.n_envs)
    report("agents/ppo_first_minibatch_max_abs_ratio_minus_1",
           max(float((r - 1).abs().max()) for r in ratios))


def best_of(k: int, fn, dev: torch.device) -> float:
    """Fastest of ``k`` timed calls (after the caller's warm-up), in seconds."""
    times = []
    for _ in range(k):
        sync(dev)
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return min(times)


def speed(device: str, dtype: str, n: int) -> None:
    dev = torch.device(device)
    cfg = TinyLMConfig(n_layer=12, n_embd=768, n_head=12, n_positions=512, seed=0)
    pol = CausalLMPolicy(build_tiny_lm(cfg), byte_tokenizer(), device=device, dtype=dtype,
                         batch_size=32)
    report("speed/params_M", round(sum(p.numel() for p in pol.parameters()) / 1e6, 1))
    rng = np.random.default_rng(0)
    prompts = ["".join(rng.choice(list("abcdefgh "), 128)) for _ in range(n)]
    responses = ["".join(rng.choice(list("abcdefgh "), 127)) for _ in range(n)]

    def forward() -> None:
        with torch.no_grad():
            pol.log_prob(prompts, responses)

    def fwd_bwd() -> None:
        for i in range(0, n, 32):
            pol.log_prob(prompts[i:i + 32], responses[i:i + 32]).sum().backward()
        pol.model.zero_grad(set_to_none=True)

    for name, fn in (("log_prob_forward", forward), ("log_prob_fwd_bwd", fwd_bwd)):
        fn()  # warm-up: kernels, allocator
        report(f"speed/{name}_pairs_per_s_{dtype}", round(n / best_of(3, fn, dev), 1))
    torch.manual_seed(0)  # a device-side generator: no per-token copy to the CPU
    for batch in (64, 256):
        pol.batch_size = batch
        out: list = []

        def sample(batch=batch, out=out) -> None:
            out[:] = pol.sample(prompts[:batch], n=1, max_new_tokens=128, temperature=1.0)

        sample()
        dt = best_of(2, sample, dev)
        toks = sum(len(r[0]) + 1 for r in out)  # byte tokenizer: one token per character
        report(f"speed/sample_batch{batch}_new_tokens_per_s_{dtype}", round(toks / dt, 1))
    # token-level PPO: 64 parallel episodes (n / 4 if fewer pairs) of up to 32 tokens,
    # 4 epochs of minibatches of 256
    pol.batch_size = 32
    ref = pol.trainable_copy().freeze()
    c = PPOConfig.from_dict({"n_envs": min(64, n // 4), "n_steps": 32,
                             "batch_size": min(256, 8 * n), "n_epochs": 4, "max_new_tokens": 32,
                             "learning_rate": 1e-5})
    model, envs = make_lm_ppo(pol, ref, prompts, kl_coef=0.1, config=c, seed=0)
    for e in envs:
        e.reward_fn = lambda p, r: np.array([float(len(x)) for x in r])
    model.learn(total_timesteps=c.n_steps * c.n_envs)  # warm-up
    dt = best_of(1, lambda: model.learn(total_timesteps=2 * c.n_steps * c.n_envs,
                                        reset_num_timesteps=False), dev)
    report(f"speed/ppo_tokens_per_s_{dtype}", round(2 * c.n_steps * c.n_envs / dt, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--skip", default="", help="comma-separated: consistency,agents,speed")
    ap.add_argument("--pairs", type=int, default=256, help="pairs in the speed test")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    unknown = skip - {"consistency", "agents", "speed"}
    if unknown:
        ap.error(f"--skip takes consistency, agents, speed; got {', '.join(sorted(unknown))}")
    report("device", torch.cuda.get_device_name() if args.device.startswith("cuda")
           else f"cpu ({torch.get_num_threads()} threads)")
    if "consistency" not in skip:
        consistency(args.device)
    if "agents" not in skip:
        agents_end_to_end(args.device)
    if "speed" not in skip:
        speed(args.device, args.dtype, args.pairs)
        if args.dtype != "float32":
            speed(args.device, "float32", args.pairs)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
