"""Tiny language models the package builds itself, with no download.

* :func:`byte_tokenizer`: a byte-level tokenizer (256 byte tokens + one
  ``<|endoftext|>`` used as EOS, BOS and pad) that round-trips any UTF-8 text.
* :class:`TinyLMConfig` and :func:`build_tiny_lm`: a GPT-2-style model from a
  config, initialised deterministically from a seed, dropout off.
* :func:`sft`: supervised fine-tuning on (prompt, response) pairs, loss on the
  response tokens (and EOS), optionally on the prompt too.
* :func:`train_reward_model`: a GPT-2-style sequence-classification reward
  model fitted on preference pairs with the Bradley-Terry loss.
* :func:`cached_tiny_lm` / :func:`cached_reward_model`: the same, cached on
  disk under ``$RLHF_ENV_CACHE`` keyed by config and data hash.

Runs on CPU in seconds to a couple of minutes; every step is deterministic for
a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlhf_env.lm.cache import cache_key, cache_root, cached_build, hash_texts
from rlhf_env.progress import quiet_transformers, timed
from rlhf_env.threads import use_small_model_threads

__all__ = [
    "EOS",
    "byte_tokenizer",
    "TinyLMConfig",
    "build_tiny_lm",
    "sft",
    "train_reward_model",
    "cached_tiny_lm",
    "cached_reward_model",
    "load_tiny_lm",
]

EOS = "<|endoftext|>"


def byte_tokenizer() -> Any:
    """A byte-level ``PreTrainedTokenizerFast``: token i < 256 is byte i, 256 is EOS (= pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2's byte map

    byte_chars = bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    vocab[EOS] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, bos_token=EOS, padding_side="left",
        model_max_length=1 << 20,
    )


@dataclass(frozen=True)
class TinyLMConfig:
    """A GPT-2-style model small enough for CPU (defaults: 2 layers, 64 wide, 0.1M params)."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_positions: int = 256
    seed: int = 0


def _gpt2_config(cfg: TinyLMConfig, **extra: Any) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=257, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=256, eos_token_id=256, pad_token_id=256, **extra,
    )


def build_tiny_lm(cfg: TinyLMConfig = TinyLMConfig()) -> Any:
    """A freshly initialised ``GPT2LMHeadModel`` (deterministic for ``cfg.seed``)."""
    from transformers import GPT2LMHeadModel

    use_small_model_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return GPT2LMHeadModel(_gpt2_config(cfg))


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator):
    """Minibatch indices for ``steps`` steps, epoch by epoch, shuffled by ``gen``."""
    order = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos : pos + batch_size].tolist()
        pos += batch_size


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    # Kept by hand (not transformers' cosine schedule, whose first step has lr 0): the
    # cached tiny pi0s and the published TinyInstruct figures were trained with this one.
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def sft(
    policy: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    prompt_loss: bool = False,
    progress: bool | None = False,
) -> list[float]:
    """Fine-tune a :class:`CausalLMPolicy` on (prompt, response) pairs; returns the losses.

    The loss is the mean negative log-likelihood per response token (EOS
    included); with ``prompt_loss=True`` the prompt is trained on as well
    (the pair is scored as ("", prompt + response)).
    """
    use_small_model_threads()
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"sft needs equal, non-empty prompts and responses "
                         f"({len(prompts)} vs {len(responses)})")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0)
    policy.train()
    losses = []
    bar = tqdm(total=steps, desc="sft", disable=None if progress is None else not progress,
               leave=False)
    for step, idx in enumerate(_batches(len(prompts), min(batch_size, len(prompts)), steps, gen)):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup=max(1, steps // 20))
        if prompt_loss:
            ps, rs = [""] * len(idx), [prompts[i] + responses[i] for i in idx]
        else:
            ps, rs = [prompts[i] for i in idx], [responses[i] for i in idx]
        logp, n_tok = policy.token_log_probs(ps, rs)
        loss = -logp.sum() / n_tok.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    policy.eval()
    return losses


def train_reward_model(
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    cfg: TinyLMConfig = TinyLMConfig(),
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    progress: bool | None = False,
) -> tuple[Any, Any, list[float]]:
    """Fit a tiny sequence-classification RM with the Bradley-Terry loss.

    Minimises -log sigmoid(r(x, chosen) - r(x, rejected)) over minibatches.
    Returns ``(model, tokenizer, losses)``.
    """
    use_small_model_threads()
    from transformers import GPT2ForSequenceClassification

    from rlhf_env.lm.reward_model import RewardModel, train_bt

    tokenizer = byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = GPT2ForSequenceClassification(_gpt2_config(cfg, num_labels=1))
    rm = RewardModel(model, tokenizer, batch_size=2 * batch_size)
    losses = train_bt(rm, prompts, chosen, rejected, steps=steps, batch_size=batch_size,
                      learning_rate=lr, seed=cfg.seed, progress=progress)
    return model, tokenizer, losses


def cached_tiny_lm(
    kind: str,
    cfg: TinyLMConfig,
    prompts: Sequence[str],
    responses: Sequence[str],
    **sft_kwargs: Any,
) -> Path:
    """Build (or reuse) a tiny LM fine-tuned on the pairs; returns its cache folder."""
    from rlhf_env.policies.causal_lm import CausalLMPolicy

    key = cache_key({"cfg": asdict(cfg), "sft": sft_kwargs},
                    hash_texts([*prompts, "\x00", *responses]))

    def build(folder: Path) -> None:
        steps = sft_kwargs.get("steps", 300)
        with timed(f"building {kind}: a {cfg.n_layer}-layer, {cfg.n_embd}-wide LM, {steps} SFT "
                   f"steps (first use; cached under {cache_root()})"), quiet_transformers():
            policy = CausalLMPolicy(build_tiny_lm(cfg), byte_tokenizer(), device="cpu",
                                    max_length=cfg.n_positions)
            sft(policy, prompts, responses, progress=None, **sft_kwargs)
            policy.save(folder)

    return cached_build(kind, key, build)


def cached_reward_model(
    kind: str,
    cfg: TinyLMConfig,
    prompts: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    **train_kwargs: Any,
) -> Path:
    """Build (or reuse) a tiny BT reward model; returns its cache folder (a HF model folder)."""
    key = cache_key({"cfg": asdict(cfg), "rm": train_kwargs, "trainer": "train_bt"},
                    hash_texts([*prompts, "\x00", *chosen, "\x00", *rejected]))

    def build(folder: Path) -> None:
        steps = train_kwargs.get("steps", 300)
        with timed(f"building {kind}: a {cfg.n_layer}-layer reward model, {steps} steps (first "
                   f"use; cached under {cache_root()})"), quiet_transformers():
            model, tokenizer, _ = train_reward_model(prompts, chosen, rejected, cfg,
                                                     progress=None, **train_kwargs)
            model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)

    return cached_build(kind, key, build)


def load_tiny_lm(folder: Path, **policy_kwargs: Any) -> Any:
    """Load a cached tiny LM as a :class:`CausalLMPolicy`."""
    from rlhf_env.policies.base import load_policy

    with quiet_transformers():
        policy = load_policy(folder)
    for k, v in policy_kwargs.items():
        setattr(policy, k, v)
    return policy
