"""Our DPO trainer against TRL's DPOTrainer: the same model, tokenizer, data and batch.

    pip install -e ".[bench]"
    python benchmarks/dpo_vs_trl.py [--pairs 512] [--steps 16] [--batch-size 32]
    python benchmarks/dpo_vs_trl.py --lora --layers 12 --width 768 --pairs 64 --steps 4 \
        --batch-size 16      # LoRA (r 16, alpha 32) on a GPT-2-sized (85M) model

1. Step-0 loss: with policy == reference both must give log 2; on a perturbed
   policy (Gaussian noise on every weight) both must agree to 1e-5. TRL's loss
   is taken from ``trainer.compute_loss`` on its first batch (the whole data),
   not from its rounded log.
2. Speed: training pairs per second over ``--steps`` optimiser steps of
   ``--batch-size`` pairs, for ours and for TRL, and the ratio. Both timings
   include tokenization and the reference log-probs (precomputed in both, as
   our trainer always does; TRL does it in its constructor, which is timed).
   Ours scores each pair's prompt once (prefix sharing, pairs packed in rows:
   ``CausalLMPolicy.pair_log_probs``); TRL 1.16 pads chosen and rejected to the
   batch's longest (its ``padding_free`` needs FlashAttention).

Model: a 2-layer, 64-wide GPT-2 over the package's byte tokenizer (``--layers``/``--width``
for others); data: TinyInstruct prompts, the correct answer chosen over a demonstration that
differs from it (no gold reward is read). CPU only (``use_cpu=True, bf16=False``).

``--lora``: both train the same LoRA adapter (r 16, alpha 32, peft's default targets) over
the same base, and both take pi0 as the base with the adapter disabled. For the step-0
losses the adapter is one of ours with its B perturbed, written into TRL's fresh adapter
with ``peft.set_peft_model_state_dict`` from our saved file (peft's format), so both score
the same weights. (Handed a PeftModel with a trained adapter instead, TRL takes a copy of
that adapter as the reference, not the base.)
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
import warnings

import numpy as np
import torch

from agents.data import PreferenceData
from agents.trainer import train_preferences
from rlhf_env.envs import tiny_tasks
from rlhf_env.models.tiny import TinyLMConfig, build_tiny_lm, byte_tokenizer
from rlhf_env.policies import CausalLMPolicy


def make_data(n: int) -> PreferenceData:
    rng = np.random.default_rng(0)
    data = PreferenceData()
    while len(data) < n:
        p = tiny_tasks.make_prompt(rng)
        a = " " + " ".join(tiny_tasks.answer(p))  # the right answer wins
        b = tiny_tasks.demonstration(p, rng)
        if a != b:
            data.extend([p], [a], [b])
    return data


def our_loss(policy: CausalLMPolicy, ref: CausalLMPolicy, data: PreferenceData, beta: float) -> float:
    with torch.no_grad():
        h = ((policy.log_prob(data.prompts, data.chosen) - ref.log_prob(data.prompts, data.chosen))
             - (policy.log_prob(data.prompts, data.rejected)
                - ref.log_prob(data.prompts, data.rejected)))
        return float(torch.nn.functional.softplus(-beta * h).mean())


def trl_trainer(model, ref_model, tokenizer, data, batch, steps, beta, out, peft_config=None):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=out, per_device_train_batch_size=batch, max_steps=steps, beta=beta,
        learning_rate=1e-3, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        report_to=[], logging_steps=max(1, steps), save_strategy="no", max_length=None,
        precompute_ref_log_probs=True, dataloader_num_workers=0, seed=0,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=10.0,
    )
    ds = Dataset.from_dict({"prompt": data.prompts, "chosen": data.chosen,
                            "rejected": data.rejected})
    return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=ds,
                      processing_class=tokenizer, peft_config=peft_config)


def trl_first_batch_loss(trainer) -> float:
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (r 16)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    tok = byte_tokenizer()
    tok.padding_side = "right"
    cfg = TinyLMConfig(n_layer=args.layers, n_embd=args.width, n_head=max(4, args.width // 64),
                       n_positions=64, seed=0)
    data = make_data(args.pairs)
    out = tempfile.mkdtemp()
    if args.lora:
        return lora_main(args, cfg, tok, data, out)

    # ---- 1. step-0 losses ------------------------------------------------------------------------
    base = build_tiny_lm(cfg)
    perturbed = copy.deepcopy(base)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in perturbed.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    ref = CausalLMPolicy(copy.deepcopy(base), tok, max_length=64, batch_size=256).freeze()
    for name, model in (("policy == reference", base), ("perturbed policy", perturbed)):
        ours = our_loss(CausalLMPolicy(copy.deepcopy(model), tok, max_length=64, batch_size=256),
                        ref, data, args.beta)
        trainer = trl_trainer(copy.deepcopy(model), copy.deepcopy(base), tok, data,
                              len(data), 1, args.beta, out)
        theirs = trl_first_batch_loss(trainer)
        print(f"step-0 loss, {name:20s} ours {ours:.7f}  TRL {theirs:.7f}  "
              f"|diff| {abs(ours - theirs):.1e}" + (f"  (log 2 = {math.log(2):.7f})"
                                                   if name.startswith("policy ==") else ""))

    # ---- 2. speed ----------------------------------------------------------------------------------
    n_train = args.steps * args.batch_size
    sub = PreferenceData(data.prompts[:n_train], data.chosen[:n_train], data.rejected[:n_train])
    policy = CausalLMPolicy(copy.deepcopy(base), tok, max_length=64).trainable_copy()
    t = time.perf_counter()
    train_preferences(policy, ref, sub, beta=args.beta, num_train_epochs=1,
                      per_device_train_batch_size=args.batch_size, learning_rate=1e-3,
                      progress=False)
    ours_rate = n_train / (time.perf_counter() - t)
    t = time.perf_counter()  # TRL tokenizes and precomputes in its constructor: time both
    trainer = trl_trainer(copy.deepcopy(base), copy.deepcopy(base), tok, sub, args.batch_size,
                          args.steps, args.beta, out)
    trainer.train()
    trl_rate = n_train / (time.perf_counter() - t)
    print(f"training speed ({args.steps} steps x {args.batch_size} pairs; tokenization and "
          f"reference log-probs included for both; {torch.get_num_threads()} threads): "
          f"ours {ours_rate:.1f} pairs/s, TRL {trl_rate:.1f} pairs/s, "
          f"ratio ours/TRL {ours_rate / trl_rate:.2f}")


def lora_main(args, cfg, tok, data, out) -> None:
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    from rlhf_env.lm.lora import LoraSettings

    settings = LoraSettings(r=16, alpha=32)
    base = build_tiny_lm(cfg)
    n_params = sum(p.numel() for p in base.parameters())
    ref = CausalLMPolicy(base, tok, max_length=64, batch_size=256).freeze()
    # ---- 1. step-0 losses on the same adapter -------------------------------------------------
    pol = ref.trainable_copy(lora=settings, seed=1)
    ours0 = our_loss(pol, ref, data, args.beta)
    with torch.no_grad():  # perturb B: a non-trivial adapter, the same in both
        g = torch.Generator().manual_seed(2)
        for k, v in pol.adapter.items():
            if k.endswith("lora_B"):
                v.add_(0.05 * torch.randn(v.shape, generator=g))
    ours1 = our_loss(pol, ref, data, args.beta)
    pol.save(f"{out}/adapter")
    for name, ours, adapter in (("adapter B = 0", ours0, None),
                                ("perturbed adapter", ours1, f"{out}/adapter/adapter")):
        trainer = trl_trainer(build_tiny_lm(cfg), None, tok, data, len(data), 1, args.beta,
                              out, peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0))
        if adapter is not None:
            result = set_peft_model_state_dict(
                trainer.model, load_file(f"{adapter}/adapter_model.safetensors"))
            assert not getattr(result, "unexpected_keys", []), result
        theirs = trl_first_batch_loss(trainer)
        print(f"step-0 loss, {name:20s} ours {ours:.7f}  TRL {theirs:.7f}  "
              f"|diff| {abs(ours - theirs):.1e}")
    # ---- 2. speed ---------------------------------------------------------------------------------
    n_train = args.steps * args.batch_size
    sub = PreferenceData(data.prompts[:n_train], data.chosen[:n_train], data.rejected[:n_train])
    base = build_tiny_lm(cfg)
    ref = CausalLMPolicy(base, tok, max_length=64, batch_size=256).freeze()
    policy = ref.trainable_copy(lora=settings)
    t = time.perf_counter()
    train_preferences(policy, ref, sub, beta=args.beta, num_train_epochs=1,
                      per_device_train_batch_size=args.batch_size, learning_rate=1e-3,
                      progress=False)
    ours_rate = n_train / (time.perf_counter() - t)
    t = time.perf_counter()
    trainer = trl_trainer(build_tiny_lm(cfg), None, tok, sub, args.batch_size, args.steps,
                          args.beta, out,
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0))
    trainer.train()
    trl_rate = n_train / (time.perf_counter() - t)
    print(f"LoRA training speed on a {n_params / 1e6:.1f}M-parameter GPT-2 ({args.steps} steps x "
          f"{args.batch_size} pairs; tokenization and reference log-probs included for both; "
          f"{torch.get_num_threads()} threads): ours {ours_rate:.2f} pairs/s, TRL "
          f"{trl_rate:.2f} pairs/s, ratio ours/TRL {ours_rate / trl_rate:.2f}")


if __name__ == "__main__":
    main()
