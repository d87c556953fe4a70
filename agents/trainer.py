"""The preference-optimisation loop every DPO-style agent shares.

``train_preferences`` trains a policy on (prompt, chosen, rejected) triples
with a loss from :mod:`agents.losses`, the reference fixed. Reference
log-probs are computed once, before the first step. Pairs whose two
responses are identical carry no preference and are dropped (counted).

IPO (``loss_type="ipo"``) is computed on per-token averaged log-probs by default, as the
IPO authors' implementation and TRL do (``ipo_average=True``; policy and reference
log-probs of each response divided by its token count, EOS included); ``False`` uses the
summed log-probs (this package before version 0.3). Finite policies have one token per
response, so the two agree there.

With ``rpo_alpha > 0`` the loss adds rpo_alpha times the per-token negative
log-likelihood of the chosen response (RPO: Pang et al. 2024; Liu et al. 2024),
which keeps DPO from moving probability onto responses it never saw.

With ``xpo_alpha > 0`` the loss of pair i adds xpo_alpha * log pi(xpo_samples[i] | x_i),
the summed log-probability of the pair's reference sample (XPO's optimism term, Xie et
al. 2024, Algorithm 1; TRL's XPO added ``alpha * policy_logps`` of the reference
completion); a pair whose sample is None gets no term.

Batches (TRL's convention): each optimiser step sees
``per_device_train_batch_size x gradient_accumulation_steps x processes`` pairs;
each process takes its share and processes it in micro-batches of
``per_device_train_batch_size``. Every micro-batch's summed loss is divided by
the *whole* batch's size and gradients are summed across processes, so the
gradient is that of the whole batch whatever the split (1 x 8, 4 x 2, or two
processes of 4). ``per_device_train_batch_size=None`` puts the whole dataset in
one batch (full-batch training, for exact envs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from agents.data import PreferenceData
from agents.losses import nll_loss, per_token, preference_loss
from rlhf_env.policies import Policy

__all__ = ["TrainResult", "train_preferences", "reference_log_probs", "distributed_context"]


METRIC_KEYS = ("loss", "nll", "rewards/chosen", "rewards/rejected", "rewards/margins",
               "rewards/accuracies", "logps/chosen", "logps/rejected")


@dataclass
class TrainResult:
    steps: int
    dropped_ties: int
    final_metrics: dict[str, float]


class _Single:
    """Stand-in for an ``accelerate.Accelerator`` when one process trains."""

    process_index, num_processes, is_main_process = 0, 1, True

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor


def distributed_context() -> Any:
    """An ``accelerate.Accelerator`` when launched on several processes, else a no-op stand-in."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        return Accelerator(cpu=not torch.cuda.is_available())
    return _Single()


@torch.no_grad()
def reference_log_probs(reference: Policy, data: PreferenceData, batch_size: int = 256,
                        max_length: int | None = None, max_prompt_length: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi0 of every chosen and rejected response, computed once, shape ``(n,)`` each
    (language models: cut to ``max_length`` / ``max_prompt_length`` as the policy's pass is)."""
    def score(prompts: list, responses: list) -> torch.Tensor:
        if max_length is None and max_prompt_length is None or not hasattr(
                reference, "token_log_probs"):
            return reference.log_prob(prompts, responses)
        return reference.token_log_probs(prompts, responses, max_length=max_length,
                                         max_prompt_length=max_prompt_length)[0]

    out_c, out_r = [], []
    for i in range(0, len(data), batch_size):
        sl = slice(i, i + batch_size)
        if hasattr(reference, "pair_log_probs"):  # language models: each prompt once
            c, _, r, _ = reference.pair_log_probs(data.prompts[sl], data.chosen[sl],
                                                  data.rejected[sl], max_length=max_length,
                                                  max_prompt_length=max_prompt_length)
        else:
            c, r = score(data.prompts[sl], data.chosen[sl]), score(data.prompts[sl],
                                                                  data.rejected[sl])
        out_c.append(c.detach().double().cpu())
        out_r.append(r.detach().double().cpu())
    if not out_c:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(out_c), torch.cat(out_r)


def accumulate_gradients(
    policy: Policy, data: PreferenceData, idx: list[int], ref_c: torch.Tensor,
    ref_r: torch.Tensor, *, beta: float, loss_type: str, label_smoothing: float,
    soft: torch.Tensor | None, micro_batch_size: int, batch_len: int, rpo_alpha: float = 0.0,
    ipo_average: bool = True, max_length: int | None = None, max_prompt_length: int | None = None,
    xpo_alpha: float = 0.0, xpo_samples: list | None = None,
) -> dict[str, float]:
    """Backward the loss of pairs ``idx`` in micro-batches, each scaled by 1/``batch_len``.

    Gradients accumulate in ``.grad``; the result is the gradient of the batch's mean
    loss whatever the micro-batch size. Returns summed (not averaged) diagnostics.
    """
    sums: dict[str, float] = {}
    for m0 in range(0, len(idx), micro_batch_size):
        mb = idx[m0 : m0 + micro_batch_size]
        prompts = [data.prompts[i] for i in mb]
        chosen = [data.chosen[i] for i in mb]
        rejected = [data.rejected[i] for i in mb]
        if hasattr(policy, "pair_log_probs"):  # language models: lengths for NLL and IPO
            pi_c, n_c, pi_r, n_r = policy.pair_log_probs(  # each prompt once (prefix sharing)
                prompts, chosen, rejected, max_length=max_length,
                max_prompt_length=max_prompt_length)
        elif hasattr(policy, "token_log_probs"):
            cut = {k: v for k, v in (("max_length", max_length),
                                     ("max_prompt_length", max_prompt_length)) if v is not None}
            pi_c, n_c = policy.token_log_probs(prompts, chosen, **cut)
            pi_r, n_r = policy.token_log_probs(prompts, rejected, **cut)
        else:
            pi_c, pi_r = policy.log_prob(prompts, chosen), policy.log_prob(prompts, rejected)
            n_c = n_r = torch.ones_like(pi_c)
        dev, dt = pi_c.device, pi_c.dtype
        n_c, n_r = n_c.to(dev, dt), n_r.to(dev, dt)
        rc, rr = ref_c[mb].to(dev, dt), ref_r[mb].to(dev, dt)
        eps = label_smoothing if soft is None else soft[mb].to(dev, dt)
        if loss_type == "ipo" and ipo_average:
            out = preference_loss(loss_type, per_token(pi_c, n_c), per_token(pi_r, n_r),
                                  per_token(rc, n_c), per_token(rr, n_r), beta, eps)
        else:
            out = preference_loss(loss_type, pi_c, pi_r, rc, rr, beta, eps)
        losses = out.losses
        if rpo_alpha:
            nll = nll_loss(pi_c, n_c)
            losses = losses + rpo_alpha * nll
            sums["nll"] = sums.get("nll", 0.0) + float(nll.detach().sum())
        if xpo_alpha and xpo_samples is not None:
            losses = losses + xpo_alpha * xpo_term(policy, prompts, [xpo_samples[i] for i in mb],
                                                   losses)
        (losses.sum() / batch_len).backward()
        sums["loss"] = sums.get("loss", 0.0) + float(losses.detach().sum())
        for k, v in out.metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(mb)
    return sums


def xpo_term(policy: Policy, prompts: list[str], samples: list, like: torch.Tensor
             ) -> torch.Tensor:
    """log pi(sample_i | x_i) per pair, 0 where the sample is None; shape of ``like``."""
    out = torch.zeros_like(like)
    idx = [i for i, a in enumerate(samples) if a is not None]
    if idx:
        lp = policy.log_prob([prompts[i] for i in idx], [samples[i] for i in idx])
        out = out.index_put((torch.tensor(idx, device=out.device),), lp.to(out))
    return out


def train_preferences(
    policy: Policy,
    reference: Policy,
    data: PreferenceData,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
    ipo_average: bool = True,
    num_train_epochs: int = 1,
    per_device_train_batch_size: int | None = 32,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 10.0,
    seed: int = 0,
    logger: Any = None,
    step_offset: int = 0,
    log_prefix: str = "train/",
    progress: bool | None = None,
    accelerator: Any = None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    xpo_alpha: float = 0.0,
    xpo_samples: list | None = None,
) -> TrainResult:
    """Minimise the preference loss over ``data`` for ``epochs`` passes; see the module docstring."""
    if xpo_samples is not None:
        if len(xpo_samples) != len(data):
            raise ValueError(f"xpo_samples has {len(xpo_samples)} entries for {len(data)} pairs")
        xpo_samples = [a for a, c, r in zip(xpo_samples, data.chosen, data.rejected) if c != r]
    data, ties = data.without_ties()
    if len(data) == 0:
        return TrainResult(0, ties, {})
    acc = accelerator or distributed_context()
    ref_c, ref_r = reference_log_probs(reference, data, max_length=max_length,
                                       max_prompt_length=max_prompt_length)
    cut_before = getattr(policy, "truncated", 0)
    soft = None if data.confidence is None else 1.0 - torch.tensor(data.confidence, dtype=torch.float64)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    if per_device_train_batch_size is None:  # full batch
        mbs = bs = len(data)
    else:
        mbs = per_device_train_batch_size
        bs = min(mbs * gradient_accumulation_steps * acc.num_processes, len(data))
    steps_per_epoch = math.ceil(len(data) / bs)
    total = num_train_epochs * steps_per_epoch
    policy.train()
    metrics: dict[str, float] = {}
    bar = tqdm(total=total, desc="preference steps", leave=False,
               disable=(not acc.is_main_process) or (None if progress is None else not progress))
    step = 0
    for _ in range(num_train_epochs):
        order = torch.randperm(len(data), generator=gen).tolist()
        for start in range(0, len(order), bs):
            batch = order[start : start + bs]
            mine = batch[acc.process_index :: acc.num_processes]
            opt.zero_grad(set_to_none=True)
            sums = accumulate_gradients(
                policy, data, mine, ref_c, ref_r, beta=beta, loss_type=loss_type,
                label_smoothing=label_smoothing, soft=soft, micro_batch_size=mbs,
                batch_len=len(batch), rpo_alpha=rpo_alpha, ipo_average=ipo_average,
                max_length=max_length, max_prompt_length=max_prompt_length,
                xpo_alpha=xpo_alpha, xpo_samples=xpo_samples)
            if acc.num_processes > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad = acc.reduce(p.grad, reduction="sum")
                keys = list(METRIC_KEYS)  # the same keys on every process, even an idle one
                tot = acc.reduce(torch.tensor([sums.get(k, 0.0) for k in keys], dtype=torch.float64,
                                              device=params[0].device), reduction="sum")
                sums = dict(zip(keys, tot.tolist()))
                sums = sums if sums["loss"] or len(batch) else {}
            if max_grad_norm is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
            else:
                grad_norm = float(torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            opt.step()
            step += 1
            metrics = {k: v / len(batch) for k, v in sums.items()}
            metrics["grad_norm"] = grad_norm
            metrics["learning_rate"] = learning_rate
            if hasattr(policy, "truncated"):  # pairs cut to fit so far in this training
                metrics["truncated"] = float(policy.truncated - cut_before)
            if logger is not None and acc.is_main_process:
                logger.log({log_prefix + k: v for k, v in metrics.items()}, step_offset + step)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
    bar.close()
    policy.eval()
    return TrainResult(step, ties, metrics)
