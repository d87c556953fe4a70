"""Sampling speed of the generation backends on SmolLM2-135M-Instruct, side by side.

    python benchmarks/backends.py --data-dir ../shared/data/hh-rlhf
        [--backends hf,vllm] [--batches 1,8,32,64] [--new-tokens 64] [--device cpu]
        [--out benchmarks/results/backends.json]

For each backend and batch size: the batch's HH prompts (chat template applied), one
sample each, up to ``--new-tokens`` new tokens; tokens per second (wall), CPU seconds per
token and tokens per CPU-second, CPU counted over the process and its children and every
thread. Then the same at ``--lora-batch`` for **a trained LoRA policy** (r 16 on q and v,
its adapter changed before every call as a training step would change it), the hand-over
of the new weights to the engine included in the time. First, this CPU's limits: one
core's fp32 and bf16 matmul peak (GFLOPS) and a copy's memory bandwidth; SmolLM2 costs
2 x 134.5M FLOPs per token, so the compute roofline is ``peak / 0.269 GFLOP`` tokens per
CPU-second, and each row gives its fraction of the roofline of its precision (hf: fp32,
vllm: bf16). The limits are this machine's (an AMX CPU does bf16 several times faster than
fp32). Run it in an environment that has vllm (``.ci/run``'s) for both backends.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

FLOP_PER_TOKEN = 2 * 134.5e6


def cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def roofline() -> dict[str, float]:
    """One core's matmul GFLOPS (fp32, bf16) and a large copy's bandwidth (GB/s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(1024, 1024, dtype=dtype)
            b = torch.randn(1024, 1024, dtype=dtype)
            a @ b
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < 2.0:
                a @ b
                reps += 1
            out[f"gflops_{name}"] = 2 * 1024**3 * reps / (time.perf_counter() - start) / 1e9
        x = torch.empty(128 * 2**20 // 4)  # 128 MiB
        y = torch.empty_like(x)
        y.copy_(x)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 1.0:
            y.copy_(x)
            reps += 1
        out["copy_gb_s"] = 2 * x.numel() * 4 * reps / (time.perf_counter() - start) / 1e9
    finally:
        torch.set_num_threads(threads)
    return out


def hh_prompts(data_dir: str, n: int) -> list[str]:
    from rlhf_env.data.hh_rlhf import load_hh_rlhf

    ds, _ = load_hh_rlhf(data_dir=data_dir, subset="harmless-base", split="test")
    seen: list[str] = []
    for row in ds:
        if row["prompt"] not in seen:
            seen.append(row["prompt"])
        if len(seen) == n:
            break
    return seen


def measure(policy: Any, prompts: list[str], new_tokens: int, seed: int,
            before: Any = None) -> dict[str, float]:
    if before is not None:
        before()
    t, c = time.perf_counter(), cpu()
    seqs = policy.sample_sequences(prompts, n=1, max_new_tokens=new_tokens,
                                   generator=torch.Generator().manual_seed(seed))
    wall, used = time.perf_counter() - t, cpu() - c
    tokens = sum(len(s.token_ids) for row in seqs for s in row)
    return {"tokens": tokens, "wall_s": wall, "cpu_s": used, "tokens_per_s": tokens / wall,
            "cpu_s_per_token": used / tokens, "tokens_per_cpu_s": tokens / used}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--lora-batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/backends.json")
    args = parser.parse_args()

    from rlhf_env.lm.lora import LoraSettings
    from rlhf_env.models.smollm2 import load_smollm2
    from rlhf_env.threads import use_small_model_threads

    use_small_model_threads()
    limits = roofline()
    limits["tokens_per_cpu_s_fp32"] = limits["gflops_fp32"] * 1e9 / FLOP_PER_TOKEN
    limits["tokens_per_cpu_s_bf16"] = limits["gflops_bf16"] * 1e9 / FLOP_PER_TOKEN
    print(json.dumps({"limits": limits}), flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    prompts = hh_prompts(args.data_dir, max(batches + [args.lora_batch]))
    rows: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        pi0 = load_smollm2(device=args.device, max_prompt_length=384, backend=backend,
                           batch_size=max(batches)).freeze()
        t, c = time.perf_counter(), cpu()
        measure(pi0, prompts[:2], 8, 0)  # warm-up: builds the engine
        start = {"wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(cpu() - c, 1)}
        precision = "bf16" if backend == "vllm" else "fp32"
        for b in batches:
            r = measure(pi0, prompts[:b], args.new_tokens, b)
            r.update(backend=backend, policy="pi0", batch=b, precision=precision,
                     roofline_fraction=r["tokens_per_cpu_s"]
                     / limits[f"tokens_per_cpu_s_{precision}"], startup=start)
            rows.append(r)
            print(json.dumps(r), flush=True)
        pol = pi0.trainable_copy(lora=LoraSettings(r=16, alpha=32.0), seed=0)
        step = {"n": 0}

        def update(pol: Any = pol, step: dict = step) -> None:
            step["n"] += 1
            with torch.no_grad():
                g = torch.Generator().manual_seed(step["n"])
                for k, v in pol.adapter.items():
                    if "lora_B" in k:
                        v.normal_(0, 0.01, generator=g)

        for rep in range(2):  # the second call: steady state (a hand-over each time)
            r = measure(pol, prompts[: args.lora_batch], args.new_tokens, 100 + rep,
                        before=update)
        r.update(backend=backend, policy="lora r16, updated before each call",
                 batch=args.lora_batch, precision=precision,
                 roofline_fraction=r["tokens_per_cpu_s"]
                 / limits[f"tokens_per_cpu_s_{precision}"])
        rows.append(r)
        print(json.dumps(r), flush=True)
        if backend == "vllm":
            pi0.engine().close()
    result = {"limits": limits, "rows": rows, "device": args.device,
              "new_tokens": args.new_tokens, "load_avg_end": os.getloadavg(),
              "torch_threads": torch.get_num_threads()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
