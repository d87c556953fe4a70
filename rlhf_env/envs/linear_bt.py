"""LinearBT: the linear Bradley-Terry contextual bandit of Xiong et al. (2024), exactly solvable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.core import RLHFEnv
from rlhf_env.data.pairs import label_pairs
from rlhf_env.errors import InvalidArgumentError
from rlhf_env.instance import (
    NORM_LIMIT,
    CommonArgs,
    ProblemInstance,
    check_positive_float,
    check_positive_int,
)
from rlhf_env.judging import Judge
from rlhf_env.oracles import Oracle, OracleContext
from rlhf_env.policies import Catalog, TabularPolicy
from rlhf_env.policies.closed_forms import log_normalize
from rlhf_env.spaces import Candidates
from rlhf_env.threads import use_small_model_threads

__all__ = ["LinearBTEnv", "BEHAVIOURS", "check_shape", "check_cosine", "check_offline",
           "random_rotation", "unit_rows"]

REGISTER = [
    {"id": "LinearBT-v0", "entry_point": "rlhf_env.envs.linear_bt:LinearBTEnv",
     "description": "Linear Bradley-Terry bandit, exactly solvable (Xiong et al. 2024, §2)."},
    {"id": "LinearBT-Narrow-v0", "entry_point": "rlhf_env.envs.linear_bt:LinearBTEnv",
     "kwargs": {"behaviour": "narrow"},
     "description": "LinearBT-v0's instances, offline pairs mostly among the worst responses: "
                    "tests poor coverage."},
]
"""The ids this module's envs are registered under (read by :mod:`rlhf_env.envs`)."""

BEHAVIOURS = ("reference", "uniform", "narrow")


class LinearBTEnv(RLHFEnv):
    r"""A linear Bradley-Terry contextual bandit with a KL-regularized objective.

    ## Description
    The theoretical setting of Xiong et al., "Iterative Preference Learning from
    Human Feedback" (ICML 2024, arXiv 2312.11456), §2: a finite set of ``n_prompts``
    prompts x (d0 uniform over them), each with the same ``n_actions`` candidate
    responses a (the strings ``"response-0"`` ... ``"response-{K-1}"``), known
    features phi(x, a) in R^dim with ||phi|| = 1, and a hidden reward

        r*(x, a) = <theta*, phi(x, a)>,   ||theta*|| = theta_norm.

    The reference policy is log-linear in the same features,
    pi0(a|x) ∝ exp(<w0, phi(x, a)>) with ||w0|| = reference_norm and cosine
    ``reference_alignment`` with theta*: better than uniform, far from optimal.

    ## Objective (Reward)
    J(pi) = E_{x~d0}[ E_{a~pi(.|x)} r*(x, a) - eta * KL(pi(.|x) || pi0(.|x)) ],
    maximised by the Gibbs policy pi*(a|x) ∝ pi0(a|x) exp(r*(x, a)/eta), with
    J(pi*) = eta * E_x log E_{a~pi0} exp(r*(x, a)/eta). Everything is a finite
    sum, so :func:`rlhf_env.evaluate` reports exact values and
    ``normalized_score = (J(pi) - J(pi0)) / (J(pi*) - J(pi0))``.

    ## Observation Space
    ``Dict({"prompt": UnicodeText})``: the prompt string ``"prompt-<i>"``;
    ``info["prompt_id"]`` is i.

    ## Action Space
    ``feedback="preference"`` (default): a pair of candidate strings
    ``(response_1, response_2)``; the Bradley-Terry oracle says response_1 is
    preferred with probability sigmoid((r*(x,a1) - r*(x,a2)) / bt_temperature);
    the reward is 1.0 if it is, else 0.0, and ``info`` has ``preference``,
    ``chosen``, ``rejected``, ``queries_used``, ``queries_left``.
    ``feedback="reward"``: one candidate string; the reward is r*(x, a).
    A string that is not a candidate raises :class:`rlhf_env.InvalidActionError`.

    ## Episode End
    Every episode is one step (``terminated=True``).

    ## Settings and data
    ``setting="offline"``: ``n_offline`` pairs, no queries. ``"online"``: no data,
    ``query_budget`` queries. ``"hybrid"`` (default): both. Offline pairs are
    (x ~ d0; a1, a2 ~ behaviour(.|x) independently, conditioned on a1 != a2),
    labelled by the same BT oracle. Behaviours: ``"reference"`` (pi0),
    ``"uniform"``, and ``"narrow"``: probability 0.95 uniform over the half of the
    actions with the lowest r* (those pi* rarely plays) and 0.05 from pi0.
    Evaluation is exact under d0, over all prompts (the prompt set is finite,
    so there is nothing to hold out; generalisation is through phi).

    ## Public parts for agents
    ``reference`` (pi0, a frozen :class:`TabularPolicy`), ``features`` (phi, an
    ``(N, K, dim)`` read-only array; the linear setting assumes phi known),
    ``catalog``, ``eta``, ``offline_dataset``, ``train_prompts``, ``query_budget``,
    ``queries_used``. theta*, the gold reward table, pi* and the behaviour
    policies are the judge's: ``rlhf_env.judge(env).theta_star``,
    ``.reward_table()``, ``.optimal_policy()``, ``.behaviour_probs()``.

    ## Arguments
    setting, query_budget (default 1024), eta (default 1.0), seed (the instance:
    features, theta*, pi0, offline data; default 0), feedback, oracle (a preset
    name or an :class:`rlhf_env.oracles.Oracle`; default ``"bt"``, Bradley-Terry
    at temperature 1), ledger (a :class:`~rlhf_env.oracles.QueryLedger` to charge;
    default a fresh one), n_prompts (32), n_actions (16), dim (16), theta_norm
    (6.0), reference_norm (2.0), reference_alignment (0.25), n_offline (default
    128; 0 with setting="online"), behaviour ("reference").

    ## Defaults
    Chosen so that the problem is worth solving (seeds 0-3): J(pi*) - J(pi0) is
    about 0.9 with KL(pi*||pi0) about 0.7 nats, and the default offline data
    alone do not pin theta* down: the Gibbs policy of the offline MLE reaches a
    normalized score of about 0.75, leaving room for online exploration.

    ## Family
    LinearBT-Narrow-v0 (``behaviour="narrow"``), and two instances built to separate
    the algorithms: LinearBT-Explore-v0 (:class:`~rlhf_env.envs.linear_bt_explore.
    LinearBTExploreEnv`: pi* plays what pi0 rarely samples, so exploration decides) and
    LinearBT-Coverage-v0 (:class:`~rlhf_env.envs.linear_bt_coverage.LinearBTCoverageEnv`:
    the offline data miss a trap direction, so pessimism decides).

    ## Version History
    * v0: initial version.
    """

    kind = "linear"

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
        theta_norm: float = 6.0,
        reference_norm: float = 2.0,
        reference_alignment: float = 0.25,
        n_offline: int | None = None,
        behaviour: str = "reference",
    ) -> None:
        common = CommonArgs.check(setting=setting, query_budget=query_budget, eta=eta, seed=seed,
                                  feedback=feedback, oracle=oracle, ledger=ledger,
                                  default_budget=1024)
        use_small_model_threads()
        n, k, d = check_shape(n_prompts, n_actions, dim)
        theta_norm = check_positive_float("theta_norm", theta_norm, allow_zero=True, high=NORM_LIMIT)
        reference_norm = check_positive_float("reference_norm", reference_norm, allow_zero=True, high=NORM_LIMIT)
        reference_alignment = check_cosine("reference_alignment", reference_alignment)
        if behaviour not in BEHAVIOURS:
            raise InvalidArgumentError(f"behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
        n_offline = check_offline(common, n_offline)

        # ---- the instance, from the seed ---------------------------------------------------
        rng = common.instance_rng(0x11B7)
        phi = unit_rows(rng.standard_normal((n, k, d)))  # ||phi(x, a)|| = 1
        u_theta = _unit(rng.standard_normal(d))
        theta = theta_norm * u_theta
        u_orth = rng.standard_normal(d)
        u_orth = _unit(u_orth - (u_orth @ u_theta) * u_theta) if d > 1 else u_theta
        rho = float(reference_alignment)
        w0 = reference_norm * (rho * u_theta + np.sqrt(max(0.0, 1 - rho**2)) * u_orth)
        self._assemble(common, rng, phi, theta, log_normalize(phi @ w0), behaviour, n_offline)

    def _assemble(self, common: CommonArgs, rng: np.random.Generator, phi: np.ndarray,
                  theta: np.ndarray, log_ref: np.ndarray, behaviour: str, n_offline: int,
                  extra_behaviours: dict[str, np.ndarray] | None = None) -> None:
        """Build the instance and the judge from the drawn (phi, theta*, log pi0).

        Every LinearBT family member ends here: the catalog, the gold reward
        r* = phi @ theta*, the bound oracle, the behaviour policies (the family's three plus
        ``extra_behaviours``), the offline pairs (drawn from ``rng`` after the instance).
        """
        n, k, _ = phi.shape
        rewards = phi @ theta  # (N, K)
        catalog = Catalog([f"prompt-{i}" for i in range(n)], [f"response-{j}" for j in range(k)])

        def gold(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
            return rewards[catalog.prompt_ids(prompts), catalog.response_ids(responses)]

        bound = common.bind_oracle(OracleContext(gold, name="LinearBT"))
        behaviours = {**_behaviours(log_ref, rewards), **(extra_behaviours or {})}
        offline = None
        if common.setting != "online":
            offline = _offline_pairs(rng, bound, catalog, behaviours[behaviour], n_offline)
        instance = ProblemInstance(
            kind="linear", common=common, oracle=bound, train_prompts=catalog.prompts,
            eval_prompts=catalog.prompts, reference=TabularPolicy(catalog, torch.from_numpy(log_ref)),
            offline_dataset=offline, response_space=Candidates(catalog.responses),
            max_prompt_length=max(len(p) for p in catalog.prompts), catalog=catalog,
            features=phi, name="LinearBT")
        super().__init__(instance, Judge(instance, gold_reward=gold, oracle=bound,
                                         reward_table=rewards, theta_star=theta,
                                         behaviours=behaviours, behaviour=behaviour))


def check_shape(n_prompts: Any, n_actions: Any, dim: Any) -> tuple[int, int, int]:
    """(N, K, d), checked: N >= 1 prompts, K >= 2 actions, d >= 1 dimensions."""
    return (check_positive_int("n_prompts", n_prompts), check_positive_int("n_actions", n_actions, 2),
            check_positive_int("dim", dim))


def check_cosine(name: str, value: Any) -> float:
    """A cosine in [-1, 1], or :class:`InvalidArgumentError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise InvalidArgumentError(f"{name} is a cosine in [-1, 1], got {value!r}")
    return float(value)


def check_offline(common: CommonArgs, n_offline: Any, default: int = 128) -> int:
    """The number of offline pairs: ``default`` unless online (0); online with data is an error."""
    if n_offline is None:
        n_offline = 0 if common.setting == "online" else default
    n_offline = check_positive_int("n_offline", n_offline, 0)
    if common.setting == "online" and n_offline:
        raise InvalidArgumentError(
            f"setting='online' has no offline data, but n_offline={n_offline}; "
            "use setting='hybrid' for both")
    return n_offline


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-random d x d orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _behaviours(log_ref: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray]:
    """The behaviour policies of the offline data, ``(N, K)`` probabilities each."""
    pi0 = np.exp(log_ref)
    k = pi0.shape[1]
    low = np.argsort(rewards, axis=1)[:, : max(1, k // 2)]
    narrow = np.zeros_like(pi0)
    np.put_along_axis(narrow, low, 1.0 / low.shape[1], axis=1)
    return {"reference": pi0, "uniform": np.full_like(pi0, 1.0 / k),
            "narrow": 0.95 * narrow + 0.05 * pi0}


def _offline_pairs(rng: np.random.Generator, oracle: Oracle, catalog: Catalog,
                   probs: np.ndarray, n_pairs: int) -> Any:
    """(x ~ d0; a1, a2 ~ behaviour(.|x) independently, a2 != a1), labelled by the oracle."""
    n, k = probs.shape
    x = np.floor(rng.random(n_pairs) * n).astype(np.int64)
    a1 = np.array([rng.choice(k, p=probs[i]) for i in x], dtype=np.int64)
    a2 = np.empty_like(a1)
    for j, (i, first) in enumerate(zip(x, a1)):
        p = probs[i].copy()
        p[first] = 0.0  # a2 ~ behaviour(. | x, a2 != a1)
        a2[j] = rng.choice(k, p=p / p.sum())
    return label_pairs(oracle, [catalog.prompts[i] for i in x],
                       [catalog.responses[j] for j in a1], [catalog.responses[j] for j in a2], rng)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def unit_rows(z: np.ndarray) -> np.ndarray:
    """``z`` scaled to unit norm along its last axis."""
    return z / np.linalg.norm(z, axis=-1, keepdims=True)
