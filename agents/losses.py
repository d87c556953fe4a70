"""Preference losses: one small function per paper.

Every function takes summed sequence log-probs (over response tokens, EOS
included; shape ``(b,)``) and returns a :class:`LossOutput`: per-example
losses (reduce them as you like) and detached diagnostics under the metric
names TRL logs (``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``).

Notation: with policy log-probs pi_c, pi_r and reference log-probs ref_c,
ref_r of the chosen and rejected responses,

    h = (pi_c - ref_c) - (pi_r - ref_r)

is the difference of the implicit rewards divided by beta. In the
KL-regularized bandit the implicit reward is eta * log(pi / pi0), so DPO's
beta is the bandit's eta (Xiong et al. 2024, §5; Rafailov et al. 2023, Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossOutput", "dpo_loss", "ipo_loss", "hinge_loss", "nll_loss", "bt_reward_loss",
           "preference_loss", "per_token", "LOSS_TYPES"]

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass
class LossOutput:
    """Per-example losses ``(b,)`` and detached scalar diagnostics."""

    losses: torch.Tensor
    metrics: dict[str, torch.Tensor]


def _diagnostics(beta: float, pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor,
                 ref_r: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        rc, rr = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
        return {
            "rewards/chosen": rc.mean(),
            "rewards/rejected": rr.mean(),
            "rewards/margins": (rc - rr).mean(),
            "rewards/accuracies": (rc > rr).float().mean(),
            "logps/chosen": pi_c.mean(),
            "logps/rejected": pi_r.mean(),
        }


def dpo_loss(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
             beta: float, label_smoothing: float | torch.Tensor = 0.0) -> LossOutput:
    """DPO (Rafailov et al. 2023, Eq. 7), with conservative DPO's label smoothing.

        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    ``eps = label_smoothing`` is the assumed probability that a label is flipped
    (cDPO, Mitchell 2023); ``eps = 0`` is DPO. At pi = ref the loss is log 2.
    ``eps`` may be a per-example tensor: with eps_i = 1 - P(chosen > rejected)
    the loss is the cross-entropy against soft (probabilistic) labels.
    """
    eps = torch.as_tensor(label_smoothing, dtype=pi_c.dtype, device=pi_c.device)
    if bool((eps < 0).any()) or bool((eps > 0.5).any()):
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    label_smoothing = eps
    h = (pi_c - ref_c) - (pi_r - ref_r)
    losses = (-(1 - label_smoothing) * F.logsigmoid(beta * h)
              - label_smoothing * F.logsigmoid(-beta * h))
    return LossOutput(losses, _diagnostics(beta, pi_c, pi_r, ref_c, ref_r))


def ipo_loss(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
             beta: float) -> LossOutput:
    """IPO (Azar et al. 2023, Eq. 17): ``(h - 1 / (2 * beta))^2``, beta playing tau's role.

    h is built from whatever log-probs are passed. The IPO authors' implementation and
    TRL's ``DPOTrainer`` pass *per-token averages* (each sequence's summed log-prob divided
    by its number of response tokens, EOS included: :func:`per_token`), which is what
    :func:`agents.trainer.train_preferences` does for IPO by default (``ipo_average``);
    with sums, the target margin 1/(2 beta) means something else for every length.
    """
    h = (pi_c - ref_c) - (pi_r - ref_r)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return LossOutput(losses, _diagnostics(beta, pi_c, pi_r, ref_c, ref_r))


def hinge_loss(pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor, ref_r: torch.Tensor,
               beta: float) -> LossOutput:
    """Hinge on the normalised log-ratio: SLiC (Zhao et al. 2023) / RSO's hinge-norm
    (Liu et al. 2023, Eq. 9): ``max(0, 1 - beta * h)``."""
    h = (pi_c - ref_c) - (pi_r - ref_r)
    losses = torch.relu(1.0 - beta * h)
    return LossOutput(losses, _diagnostics(beta, pi_c, pi_r, ref_c, ref_r))


def preference_loss(loss_type: str, pi_c: torch.Tensor, pi_r: torch.Tensor, ref_c: torch.Tensor,
                    ref_r: torch.Tensor, beta: float,
                    label_smoothing: float | torch.Tensor = 0.0) -> LossOutput:
    """Dispatch to :func:`dpo_loss` ("sigmoid"), :func:`ipo_loss` or :func:`hinge_loss`."""
    if loss_type == "sigmoid":
        return dpo_loss(pi_c, pi_r, ref_c, ref_r, beta, label_smoothing)
    if bool(torch.as_tensor(label_smoothing).any()):
        raise ValueError(f"label_smoothing applies to loss_type='sigmoid' only, not {loss_type!r}")
    if loss_type == "ipo":
        return ipo_loss(pi_c, pi_r, ref_c, ref_r, beta)
    if loss_type == "hinge":
        return hinge_loss(pi_c, pi_r, ref_c, ref_r, beta)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def nll_loss(logp: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of each sequence, ``-logp / n_tokens``, shape ``(b,)``.

    The term RPO adds to DPO (Pang et al. 2024, "Iterative Reasoning Preference
    Optimization", Eq. 1; Liu et al. 2024 show it acts as a regulariser against
    over-optimisation), as TRL's ``rpo_alpha`` does.
    """
    return -logp / n_tokens.clamp(min=1)


def per_token(logp: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Summed sequence log-probs ``(b,)`` as per-token averages: ``logp / n_tokens`` (TRL's
    length normalisation for IPO: ``all_logps / loss_mask.sum(-1)``)."""
    return logp / n_tokens.to(logp.dtype).clamp(min=1)


def bt_reward_loss(r_c: torch.Tensor, r_r: torch.Tensor) -> LossOutput:
    """Bradley-Terry reward-model loss (Ouyang et al. 2022, Eq. 1): ``-log sigmoid(r_c - r_r)``."""
    losses = -F.logsigmoid(r_c - r_r)
    with torch.no_grad():
        metrics = {"rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
                   "rewards/margins": (r_c - r_r).mean(),
                   "rewards/accuracies": (r_c > r_r).float().mean()}
    return LossOutput(losses, metrics)
