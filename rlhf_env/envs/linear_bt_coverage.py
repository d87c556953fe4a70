"""LinearBT-Coverage: a linear BT bandit whose offline data leave poor responses uncovered."""

from __future__ import annotations

from typing import Any

import numpy as np

from rlhf_env.envs.linear_bt import (
    BEHAVIOURS,
    LinearBTEnv,
    check_cosine,
    check_offline,
    check_shape,
    random_rotation,
    unit_rows,
)
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.instance import NORM_LIMIT, CommonArgs, check_positive_float, check_positive_int
from rlhf_env.policies.closed_forms import log_normalize

__all__ = ["LinearBTCoverageEnv", "COVERAGE_BEHAVIOURS"]

REGISTER = [
    {"id": "LinearBT-Coverage-v0",
     "entry_point": "rlhf_env.envs.linear_bt_coverage:LinearBTCoverageEnv",
     "description": "LinearBT whose offline data never cover a trap direction: pessimism decides."},
]
"""The ids this module's envs are registered under (read by :mod:`rlhf_env.envs`)."""

COVERAGE_BEHAVIOURS = (*BEHAVIOURS, "gap")


class LinearBTCoverageEnv(LinearBTEnv):
    r"""A linear BT bandit with a coverage gap, where pessimism pays (LinearBT-Coverage-v0).

    ## Purpose
    Pessimism (Xiong et al., ICML 2024, arXiv 2312.11456, Algorithm 1: the Gibbs
    policy of a lower confidence bound on the reward) helps when the offline data
    leave some directions under-covered *and* the maximum-likelihood reward
    extrapolates into them optimistically. Here ``n_traps`` responses per prompt
    ("traps") look like good responses in every direction the data cover, but
    carry a penalty along one direction the behaviour policy never explores. The
    MLE cannot see the penalty (it has no data there) and, extrapolating from the
    covered part, rates the traps highly; the Gibbs policy of the MLE moves mass
    onto them. The bound's width along the uncovered direction is large, so the
    pessimistic policy keeps away from them, as pi* does.

    ## Description
    Everything of :class:`LinearBTEnv` (spaces, the Bradley-Terry oracle, one-step
    episodes, exact evaluation, the public parts and the judge), with a structured
    instance. R^dim splits into a covered subspace (dim - 1 dimensions) and a trap
    direction e. theta* = theta_norm · u - trap_penalty · e, u a unit vector of
    the covered subspace. A non-trap response has a unit feature vector in the
    covered subspace; a trap (``n_traps`` per prompt, at random) has

        phi = sqrt(1 - t^2) · v + t · e,   v = unit(lure · u + sqrt(1 - lure^2) · g),

    t = ``trap_weight``, g a random unit vector of the covered subspace: its covered
    part leans towards u (cosine about ``lure``), so the covered part of the reward
    rates it well, and the trap direction costs t · trap_penalty. pi0 is log-linear,
    pi0 ∝ exp(<w0, phi>), w0 in the covered subspace (||w0|| = reference_norm,
    cosine ``reference_alignment`` with u): pi0 plays the traps as often as other
    responses. One random rotation (from the seed) turns the whole feature space.

    ## Objective (Reward)
    As :class:`LinearBTEnv`: J(pi) = E_x[E_{a~pi} r* - eta · KL(pi || pi0)], exact.

    ## Settings and data
    ``behaviour="gap"`` (default): the offline pairs are pairs of pi0 samples
    conditioned on not being traps, so the data never move along e. Also
    ``"reference"``, ``"uniform"`` and ``"narrow"`` (the family's behaviours:
    with them the gap closes and pessimism has nothing to fix).

    ## Arguments
    setting, query_budget (default 1024), eta (1.0), seed (the instance; default 0),
    feedback, oracle, ledger, n_prompts (32), n_actions (16), dim (16), n_traps (2),
    trap_weight (0.5), lure (0.5), trap_penalty (6.0), theta_norm (6.0),
    reference_norm (2.0), reference_alignment (0.25), n_offline (256; 0 online),
    behaviour ("gap").

    ## Defaults
    Chosen on seeds 100-109 (disjoint from the seeds 0-9 reported) so that the MLE's
    Gibbs policy puts too much mass on the traps while the data pin the covered
    directions down. Seeds 0-9: J(pi*) - J(pi0) = 0.93, KL(pi* || pi0) = 0.74 nats;
    pi0 plays the traps with mass 0.14, pi* with 0.055. Offline (256 pairs):
    ``mle_gibbs`` 0.243, ``pessimistic_gibbs`` with the Wald width rule
    (agents/algorithms/gshf.py) 0.887; with ``behaviour="reference"`` (no gap) both
    0.926 (benchmarks/README.md).

    ## Version History
    * v0: initial version.
    """

    def __init__(
        self,
        *,
        setting: str = "hybrid",
        query_budget: int | None = None,
        eta: float = 1.0,
        seed: int | None = 0,
        feedback: str = "preference",
        oracle: Any = "bt",
        ledger: Any = None,
        n_prompts: int = 32,
        n_actions: int = 16,
        dim: int = 16,
        n_traps: int = 2,
        trap_weight: float = 0.5,
        lure: float = 0.5,
        trap_penalty: float = 6.0,
        theta_norm: float = 6.0,
        reference_norm: float = 2.0,
        reference_alignment: float = 0.25,
        n_offline: int | None = None,
        behaviour: str = "gap",
    ) -> None:
        common = CommonArgs.check(setting=setting, query_budget=query_budget, eta=eta, seed=seed,
                                  feedback=feedback, oracle=oracle, ledger=ledger,
                                  default_budget=1024)
        n, k, d = check_shape(n_prompts, n_actions, dim)
        if d < 2:
            raise InvalidArgumentError(f"dim must be >= 2 (a covered subspace and e), got {d}")
        n_traps = check_positive_int("n_traps", n_traps)
        if n_traps > k - 2:
            raise InvalidArgumentError(
                f"n_traps must leave two non-traps per prompt (n_actions={k}), got {n_traps}")
        t = check_cosine("trap_weight", trap_weight)
        lure = check_cosine("lure", lure)
        if t <= 0 or lure < 0:
            raise InvalidArgumentError(
                f"trap_weight must be in (0, 1] and lure in [0, 1], got {trap_weight!r}, {lure!r}")
        trap_penalty = check_positive_float("trap_penalty", trap_penalty, allow_zero=True, high=NORM_LIMIT)
        theta_norm = check_positive_float("theta_norm", theta_norm, allow_zero=True, high=NORM_LIMIT)
        reference_norm = check_positive_float("reference_norm", reference_norm, allow_zero=True, high=NORM_LIMIT)
        rho = check_cosine("reference_alignment", reference_alignment)
        if behaviour not in COVERAGE_BEHAVIOURS:
            raise InvalidArgumentError(
                f"behaviour must be one of {COVERAGE_BEHAVIOURS}, got {behaviour!r}")
        n_offline = check_offline(common, n_offline, default=256)

        # ---- the instance, from the seed ---------------------------------------------------
        rng = common.instance_rng(0xC0E7)
        dc = d - 1
        traps = np.zeros((n, k), dtype=bool)
        np.put_along_axis(traps, np.argsort(rng.random((n, k)), axis=1)[:, :n_traps], True, axis=1)
        u = unit_rows(rng.standard_normal(dc))
        phi = np.zeros((n, k, d))
        phi[..., :dc] = unit_rows(rng.standard_normal((n, k, dc)))
        v = unit_rows(lure * u + np.sqrt(1 - lure**2) * unit_rows(rng.standard_normal((n, k, dc))))
        phi[traps] = np.concatenate([np.sqrt(1 - t**2) * v, np.full((n, k, 1), t)], axis=-1)[traps]
        theta = np.concatenate([theta_norm * u, [-trap_penalty]])
        u_o = rng.standard_normal(dc)
        u_o = unit_rows(u_o - (u_o @ u) * u) if dc > 1 else u
        w0 = np.concatenate([reference_norm * (rho * u + np.sqrt(1 - rho**2) * u_o), [0.0]])
        log_ref = log_normalize(phi @ w0)
        gap = np.where(traps, 0.0, np.exp(log_ref))
        gap /= gap.sum(axis=1, keepdims=True)  # pi0 conditioned on not being a trap
        q = random_rotation(rng, d)  # phi q . theta q = phi . theta
        self._assemble(common, rng, phi @ q, theta @ q, log_ref, behaviour, n_offline,
                       extra_behaviours={"gap": gap})
