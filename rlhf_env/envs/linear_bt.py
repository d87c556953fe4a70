"""LinearBT: the linear Bradley-Terry contextual bandit of Xiong et al. (2024), exactly solvable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlhf_env.core import RLHFEnv, check_seed, resolve_setting
from rlhf_env.errors import InvalidActionError, InvalidArgumentError
from rlhf_env.oracles import BradleyTerryOracle
from rlhf_env.policies import Catalog, TabularPolicy
from rlhf_env.spaces import Candidates

__all__ = ["LinearBTEnv", "BEHAVIOURS"]

BEHAVIOURS = ("reference", "uniform", "narrow")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    if not ok or not (value >= 0 if allow_zero else value > 0):
        raise InvalidArgumentError(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
        )
    return float(value)


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
    ``(N, K, dim)`` array; the linear setting assumes phi known), ``catalog``,
    ``eta``, ``offline_dataset``, ``train_prompts``, ``query_budget``,
    ``queries_used``. ``theta_star``, ``gold_rewards()`` and ``optimal_policy()``
    are for evaluation and tests; agents must not read them.

    ## Arguments
    setting, query_budget (default 1024), eta (default 1.0), seed (the instance:
    features, theta*, pi0, offline data; default 0), feedback, n_prompts (32),
    n_actions (16), dim (16), theta_norm (6.0), reference_norm (2.0),
    reference_alignment (0.25), n_offline (default 128; 0 with setting="online"),
    behaviour ("reference"), bt_temperature (1.0), deterministic_oracle (False).

    ## Defaults
    Chosen so that the problem is worth solving (seeds 0-3): J(pi*) - J(pi0) is
    about 0.9 with KL(pi*||pi0) about 0.7 nats, and the default offline data
    alone do not pin theta* down: the Gibbs policy of the offline MLE reaches a
    normalized score of about 0.75, leaving room for online exploration.

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
        n_prompts: int = 32,
        n_actions: int = 16,
        dim: int = 16,
        theta_norm: float = 6.0,
        reference_norm: float = 2.0,
        reference_alignment: float = 0.25,
        n_offline: int | None = None,
        behaviour: str = "reference",
        bt_temperature: float = 1.0,
        deterministic_oracle: bool = False,
    ) -> None:
        seed = check_seed(seed)
        setting, budget = resolve_setting(setting, query_budget, default_budget=1024)
        n, k, d = (_positive_int(name, v, lo) for name, v, lo in
                   (("n_prompts", n_prompts, 1), ("n_actions", n_actions, 2), ("dim", dim, 1)))
        eta = _positive_float("eta", eta)
        theta_norm = _positive_float("theta_norm", theta_norm, allow_zero=True)
        reference_norm = _positive_float("reference_norm", reference_norm, allow_zero=True)
        if not (isinstance(reference_alignment, (int, float)) and -1 <= reference_alignment <= 1):
            raise InvalidArgumentError(
                f"reference_alignment is a cosine in [-1, 1], got {reference_alignment!r}"
            )
        if behaviour not in BEHAVIOURS:
            raise InvalidArgumentError(f"behaviour must be one of {BEHAVIOURS}, got {behaviour!r}")
        if n_offline is None:
            n_offline = 0 if setting == "online" else 128
        n_offline = _positive_int("n_offline", n_offline, 0)
        if setting == "online" and n_offline:
            raise InvalidArgumentError(
                f"setting='online' has no offline data, but n_offline={n_offline}; "
                "use setting='hybrid' for both"
            )

        # ---- the instance, from the seed ---------------------------------------------------
        rng = np.random.default_rng(np.random.SeedSequence([0 if seed is None else seed, 0x11B7]))
        phi = rng.standard_normal((n, k, d))
        phi /= np.linalg.norm(phi, axis=-1, keepdims=True)  # ||phi(x, a)|| = 1
        u_theta = _unit(rng.standard_normal(d))
        theta = theta_norm * u_theta
        u_orth = rng.standard_normal(d)
        u_orth = _unit(u_orth - (u_orth @ u_theta) * u_theta) if d > 1 else u_theta
        rho = float(reference_alignment)
        w0 = reference_norm * (rho * u_theta + np.sqrt(max(0.0, 1 - rho**2)) * u_orth)
        ref_logits = phi @ w0
        self._ref_log_probs = ref_logits - _logsumexp(ref_logits)
        self.features = phi
        self.theta_star = theta
        self._rewards = phi @ theta  # (N, K)
        self.catalog = Catalog([f"prompt-{i}" for i in range(n)],
                               [f"response-{j}" for j in range(k)])
        self._candidates = frozenset(self.catalog.responses)
        oracle = BradleyTerryOracle(self._reward_fn, temperature=bt_temperature,
                                    deterministic=deterministic_oracle)
        reference = TabularPolicy(self.catalog, torch.from_numpy(self._ref_log_probs))
        self.behaviour = behaviour
        offline = None
        if setting != "online":
            offline = self._offline_pairs(rng, oracle, n_offline, behaviour)
        self._setup(
            train_prompts=self.catalog.prompts,
            eval_prompts=self.catalog.prompts,
            reference=reference,
            oracle=oracle,
            eta=eta,
            setting=setting,
            query_budget=budget,
            offline_dataset=offline,
            feedback=feedback,
            seed=seed,
            response_space=Candidates(self.catalog.responses),
            max_prompt_length=max(len(p) for p in self.catalog.prompts),
        )

    # -- the gold reward (privileged) ----------------------------------------------------------
    def _reward_fn(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return self._rewards[self.catalog.prompt_ids(prompts), self.catalog.response_ids(responses)]

    def gold_rewards(self) -> np.ndarray:
        """r*(x, a) for every prompt and candidate, ``(N, K)``. Evaluation and tests only."""
        return self._rewards.copy()

    def reference_log_probs(self) -> np.ndarray:
        """log pi0(a|x), ``(N, K)``."""
        return self._ref_log_probs.copy()

    def optimal_policy(self) -> TabularPolicy:
        """The Gibbs policy pi* ∝ pi0 exp(r*/eta) (Xiong et al. 2024, Eq. (3)). Evaluation only."""
        logits = self._ref_log_probs + self._rewards / self.eta
        return TabularPolicy(self.catalog, torch.from_numpy(logits - _logsumexp(logits)))

    def behaviour_probs(self, behaviour: str | None = None) -> np.ndarray:
        """The offline behaviour policy, ``(N, K)`` probabilities."""
        behaviour = behaviour or self.behaviour
        pi0 = np.exp(self._ref_log_probs)
        if behaviour == "reference":
            return pi0
        k = pi0.shape[1]
        if behaviour == "uniform":
            return np.full_like(pi0, 1.0 / k)
        low = np.argsort(self._rewards, axis=1)[:, : max(1, k // 2)]
        narrow = np.zeros_like(pi0)
        np.put_along_axis(narrow, low, 1.0 / low.shape[1], axis=1)
        return 0.95 * narrow + 0.05 * pi0

    # -- validation ------------------------------------------------------------------------
    def _validate_responses(self, prompts: Sequence[str], responses: Sequence[Any]) -> None:
        super()._validate_responses(prompts, responses)
        for p, r in zip(prompts, responses):
            if r not in self._candidates:
                raise InvalidActionError(
                    f"response {r!r} is not one of the {len(self.catalog.responses)} candidates "
                    f"of prompt {p!r}: valid are {self.catalog.responses[0]!r} ... "
                    f"{self.catalog.responses[-1]!r}"
                )

    # -- offline data ------------------------------------------------------------------------
    def _offline_pairs(
        self, rng: np.random.Generator, oracle: BradleyTerryOracle, n_pairs: int, behaviour: str
    ) -> Any:
        import datasets  # heavy; only when an env has offline data

        probs = self.behaviour_probs(behaviour)
        n, k = probs.shape
        x = np.floor(rng.random(n_pairs) * n).astype(np.int64)
        a1 = np.array([rng.choice(k, p=probs[i]) for i in x], dtype=np.int64)
        a2 = np.empty_like(a1)
        for j, (i, first) in enumerate(zip(x, a1)):
            p = probs[i].copy()
            p[first] = 0.0  # a2 ~ behaviour(. | x, a2 != a1)
            a2[j] = rng.choice(k, p=p / p.sum())
        prompts = [self.catalog.prompts[i] for i in x]
        r1 = [self.catalog.responses[j] for j in a1]
        r2 = [self.catalog.responses[j] for j in a2]
        y, _, _ = oracle.preferences(prompts, r1, r2, rng)
        chosen = [u if yi else v for u, v, yi in zip(r1, r2, y)]
        rejected = [v if yi else u for u, v, yi in zip(r1, r2, y)]
        return datasets.Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected})


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
