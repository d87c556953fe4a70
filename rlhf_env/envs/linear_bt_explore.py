"""LinearBT-Explore: a linear BT bandit where pi0's data cannot reveal what pi* plays."""

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

__all__ = ["LinearBTExploreEnv"]

REGISTER = [
    {"id": "LinearBT-Explore-v0", "entry_point": "rlhf_env.envs.linear_bt_explore:LinearBTExploreEnv",
     "description": "LinearBT where pi* plays responses pi0 rarely samples: exploration decides."},
]
"""The ids this module's envs are registered under (read by :mod:`rlhf_env.envs`)."""


class LinearBTExploreEnv(LinearBTEnv):
    r"""A linear BT bandit on which exploration decides the ranking (LinearBT-Explore-v0).

    ## Purpose
    Online learning beats offline learning on *equal labels* only where the data
    pi0 generates cannot reveal what pi* plays. Here pi* plays responses that pi0
    almost never samples, and those responses live in feature directions no other
    response touches, so pairs of pi0 samples carry next to no information about
    the part of theta* that decides pi*. Offline learners (MLE, pessimism, DPO) on
    N pairs of pi0 samples must wait for the rare pairs that touch those
    directions; an online learner that moves its sampling towards them (GSHF's
    enhancer, iterative DPO's main agent once it tilts) learns them with far fewer
    labels. A testbed for Xiong et al. (ICML 2024, arXiv 2312.11456), §3-4: online
    iterative learning with an exploring enhancer against offline learning.

    ## Description
    Everything of :class:`LinearBTEnv` (observation and action spaces, the
    Bradley-Terry oracle, one-step episodes, exact evaluation, the public parts
    and the judge), with a structured instance. The feature space R^dim splits
    into a *common* subspace (dim - hidden_dim dimensions) and a *hidden* one
    (hidden_dim dimensions). For every prompt x, ``n_rare`` of the ``n_actions``
    responses (chosen at random per prompt) are *rare*: their features are unit
    vectors in the hidden subspace; the other responses' features are unit vectors
    in the common subspace. Then

        theta* = theta_norm · (sqrt(1 - s^2) · u_c + s · u_h),  s = hidden_share,

    u_c, u_h unit vectors of the two subspaces, and

        pi0(a|x) = (1 - rare_mass) · softmax_common(<w0, phi(x, .)>)(a)   (a common),
        pi0(a|x) = rare_mass / n_rare                                      (a rare),

    with w0 in the common subspace, ||w0|| = reference_norm and cosine
    ``reference_alignment`` with u_c. The whole feature space is turned by one
    random rotation (drawn from the seed), so the two subspaces are not coordinate
    axes. pi0 is not log-linear in phi (it is a table); the log-linear class
    pi ∝ pi0 exp(<w, phi>) still holds pi* = pi0 exp(r*/eta) / Z.

    ## Objective (Reward)
    J(pi) = E_x[ E_{a~pi} r*(x, a) - eta · KL(pi(.|x) || pi0(.|x)) ], as in
    :class:`LinearBTEnv`; ``normalized_score`` = (J(pi) - J(pi0)) / (J(pi*) - J(pi0)).

    ## Settings and data
    As :class:`LinearBTEnv`: ``"hybrid"`` (default) has ``n_offline`` pairs of
    pi0 samples (distinct within a pair) and ``query_budget`` queries. Behaviours:
    ``"reference"`` (default), ``"uniform"``, ``"narrow"``.

    ## Arguments
    setting, query_budget (default 1024), eta (1.0), seed (the instance; default 0),
    feedback, oracle, ledger, n_prompts (32), n_actions (16), dim (16), hidden_dim (2),
    n_rare (4), rare_mass (0.002: pi0's total mass on the rare responses of a
    prompt), theta_norm (10.0), hidden_share (0.95), reference_norm (2.0),
    reference_alignment (0.25), n_offline (128; 0 online), behaviour ("reference").

    ## Defaults
    Chosen on seeds 100-109 (disjoint from the seeds 0-9 reported) so that pi* plays the
    rare responses most of the time and offline learning on pi0's data is slow. Seeds
    0-9: J(pi*) - J(pi0) = 1.32 (1.19-1.48), KL(pi* || pi0) = 3.5 nats, pi*'s mass on
    the rare responses 0.53 (pi0's: 0.002). At 1,024 labels each (online setting):
    ``gshf_online`` 0.938 and ``iterative_dpo`` 0.880 against 0.474 for
    ``mle_gibbs_pi0`` on 1,024 pairs of pi0 samples (normalized score; paired
    intervals and the curves against labels in benchmarks/README.md).

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
        hidden_dim: int = 2,
        n_rare: int = 4,
        rare_mass: float = 0.002,
        theta_norm: float = 10.0,
        hidden_share: float = 0.95,
        reference_norm: float = 2.0,
        reference_alignment: float = 0.25,
        n_offline: int | None = None,
        behaviour: str = "reference",
    ) -> None:
        common = CommonArgs.check(setting=setting, query_budget=query_budget, eta=eta, seed=seed,
                                  feedback=feedback, oracle=oracle, ledger=ledger,
                                  default_budget=1024)
        n, k, d = check_shape(n_prompts, n_actions, dim)
        dh = check_positive_int("hidden_dim", hidden_dim)
        if dh >= d:
            raise InvalidArgumentError(
                f"hidden_dim must be below dim={d} (the common subspace needs a dimension), "
                f"got {dh}")
        n_rare = check_positive_int("n_rare", n_rare)
        if n_rare >= k:
            raise InvalidArgumentError(
                f"n_rare must be below n_actions={k} (some responses must be common), got {n_rare}")
        rare_mass = check_positive_float("rare_mass", rare_mass)
        if rare_mass >= 1:
            raise InvalidArgumentError(f"rare_mass is a probability in (0, 1), got {rare_mass!r}")
        theta_norm = check_positive_float("theta_norm", theta_norm, allow_zero=True, high=NORM_LIMIT)
        share = check_cosine("hidden_share", hidden_share)
        if share < 0:
            raise InvalidArgumentError(f"hidden_share must be in [0, 1], got {hidden_share!r}")
        reference_norm = check_positive_float("reference_norm", reference_norm, allow_zero=True, high=NORM_LIMIT)
        rho = check_cosine("reference_alignment", reference_alignment)
        if behaviour not in BEHAVIOURS:
            raise InvalidArgumentError(f"behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
        n_offline = check_offline(common, n_offline)

        # ---- the instance, from the seed ---------------------------------------------------
        rng = common.instance_rng(0xE7B1)
        dc = d - dh
        rare = np.zeros((n, k), dtype=bool)
        np.put_along_axis(rare, np.argsort(rng.random((n, k)), axis=1)[:, :n_rare], True, axis=1)
        phi = np.zeros((n, k, d))
        phi[..., :dc] = unit_rows(rng.standard_normal((n, k, dc)))
        hidden = unit_rows(rng.standard_normal((n, k, dh)))
        phi[rare] = 0.0
        phi[..., dc:][rare] = hidden[rare]
        u_c = unit_rows(rng.standard_normal(dc))
        u_h = unit_rows(rng.standard_normal(dh))
        theta = np.concatenate([theta_norm * np.sqrt(1 - share**2) * u_c, theta_norm * share * u_h])
        u_o = rng.standard_normal(dc)
        u_o = unit_rows(u_o - (u_o @ u_c) * u_c) if dc > 1 else u_c
        w0 = np.concatenate([reference_norm * (rho * u_c + np.sqrt(1 - rho**2) * u_o), np.zeros(dh)])
        log_common = log_normalize(np.where(rare, -np.inf, phi @ w0))
        log_ref = np.where(rare, np.log(rare_mass / n_rare), np.log1p(-rare_mass) + log_common)
        q = random_rotation(rng, d)  # phi q . theta q = phi . theta
        self._assemble(common, rng, phi @ q, theta @ q, log_ref, behaviour, n_offline)
