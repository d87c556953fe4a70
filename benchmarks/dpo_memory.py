"""Memory per token of a DPO step: full fine-tuning vs LoRA, with and without gradient
checkpointing, on a GPT-2-sized model (85M parameters) on the CPU.

    python benchmarks/dpo_memory.py [--pairs 8] [--tokens 256] [--layers 12 --width 768]

Each configuration runs in its own process (so that one's allocations do not hide
another's): it builds the model (random weights, the package's byte tokenizer, so the
sequence length in tokens is the text length in bytes), takes one optimiser step of
``train_preferences`` on ``--pairs`` pairs of ``--tokens``-token sequences, and reports the
peak resident memory above the resident memory after building (ru_maxrss), divided by the
tokens in the step (2 x pairs x tokens), with the step's CPU and wall time. The reference
log-probs are computed before the step and included in the peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = [("full", False), ("full", True), ("lora", False), ("lora", True)]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(kind: str, checkpointing: bool, pairs: int, tokens: int, layers: int, width: int) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from agents.data import PreferenceData
    from agents.trainer import train_preferences
    from rlhf_env.lm.lora import LoraSettings
    from rlhf_env.models.tiny import byte_tokenizer
    from rlhf_env.policies import CausalLMPolicy

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=257, n_positions=2 * tokens + 8, n_embd=width,
                                       n_layer=layers, n_head=12, bos_token_id=256,
                                       eos_token_id=256, pad_token_id=256))
    ref = CausalLMPolicy(model, byte_tokenizer(), max_length=2 * tokens + 8).freeze()
    policy = (ref.trainable_copy(lora=LoraSettings(r=16, alpha=32)) if kind == "lora"
              else ref.trainable_copy())
    policy.set_gradient_checkpointing(checkpointing)
    half = tokens // 2
    data = PreferenceData([("q" * half) + str(i) for i in range(pairs)], ["a" * half] * pairs,
                          ["b" * half] * pairs)
    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    train_preferences(policy, ref, data, beta=0.1, num_train_epochs=1,
                      per_device_train_batch_size=pairs, learning_rate=1e-4, progress=False)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_tok = 2 * pairs * (tokens + 2)
    return {"kind": kind, "gradient_checkpointing": checkpointing,
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_trained": sum(p.numel() for p in policy.parameters() if p.requires_grad),
            "tokens": n_tok, "base_rss_mb": round(base), "peak_rss_mb": round(peak),
            "kb_per_token": round(1024 * (peak - base) / n_tok, 1), "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--one", nargs=2, metavar=("KIND", "CHECKPOINTING"), help="internal")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1] == "1", args.pairs, args.tokens,
                             args.layers, args.width)))
        return
    rows = []
    for kind, ckpt in CONFIGS:
        cmd = [sys.executable, __file__, "--one", kind, str(int(ckpt)), "--pairs",
               str(args.pairs), "--tokens", str(args.tokens), "--layers", str(args.layers),
               "--width", str(args.width)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{kind:4s} checkpointing={str(ckpt):5s} params {r['params_total'] / 1e6:.1f}M "
              f"(trained {r['params_trained'] / 1e6:.2f}M)  peak {r['peak_rss_mb']} MB over "
              f"{r['base_rss_mb']} MB  {r['kb_per_token']:.1f} KB/token  step {r['wall_s']} s "
              f"wall, {r['cpu_s']} s CPU ({r['threads']} threads)", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
