"""Evaluation: the same metrics for every agent, outside the query budget.

``evaluate(policy, env)`` reports, on the env's evaluation prompts:

* ``gold_reward`` = E_x E_{a~pi} r*(x, a)
* ``kl``          = E_x KL(pi(.|x) || pi0(.|x))   (reverse KL, nats)
* ``objective``   = gold_reward - eta * kl        (J(pi), the bandit's objective)
* ``win_rate``    = E_x E_{a~pi, b~pi0} sigmoid(r*(x,a) - r*(x,b)),
  the probability under the gold Bradley-Terry model (temperature 1, whatever
  the training oracle) that a response of the policy beats one of pi0.

Evaluation is privileged: it asks the judge (:func:`rlhf_env.judge`) for the
clean gold reward, outside the budget. The training oracle (noisy or not)
never enters it: two envs that differ only in their oracle give the same
evaluation of the same policy.

On exact (finite-action) envs these are exact sums over all candidates, and
the dict adds ``optimal_objective`` J(pi*), ``reference_objective`` J(pi0) and
``normalized_score`` = (J(pi) - J(pi0)) / (J(pi*) - J(pi0)): 0 for pi0, 1 for pi*,
and the reference points of a reward-against-KL plot: ``optimal/gold_reward``
and ``optimal/kl`` (pi*), and ``best_of_<n>/gold_reward`` and ``best_of_<n>/kl``
(best-of-n of pi0 by gold reward, exact, n = 1, 2, 4, ..., 64).

On sampled (language) envs they are Monte Carlo estimates on the held-out
prompts, each with a ``*_stderr`` (the standard error of the mean over
prompts, samples of one prompt averaged first). ``kl`` is the **exact per-token KL**
along the policy's own samples: for each sample, the sum over the prefixes it drew of
KL(pi(.|prefix) || pi0(.|prefix)), each a sum over the whole vocabulary
(:meth:`~rlhf_env.policies.CausalLMPolicy.score_samples`). By the chain rule its expectation
is the sequence-level KL, as that of the log-ratio log pi(y|x) - log pi0(y|x) is
(reported too, as ``kl_log_ratio``), with a much smaller spread per sample at no extra
sampling. Both score exactly the tokens that were drawn (a sample cut at
``max_new_tokens`` has no stop token; bytes that are not valid UTF-8 are not
re-encoded), pi under the distribution it was sampled from (``temperature``,
``top_p``) and pi0 under its own (temperature 1, its top-p): the KL of the policy as
evaluated; ``objective`` uses ``kl``. That needs a causal LM policy over pi0's
tokenizer; any other policy is scored by ``log_prob`` on the text (``kl`` is then the
log-ratio) and only at temperature 1 (other options are refused); ``win_rate`` pairs
each policy sample with a pi0 sample and averages the BT probability. The dict adds
``mean_length`` (characters), ``mean_tokens`` (response tokens drawn, the stop token
not counted; causal LM policies) and best-of-n reference points of pi0: ``best_of_<n>/gold_reward`` (best of n pi0 samples by
gold reward) and ``best_of_<n>/kl`` = log n - (n - 1)/n, the analytic KL of
best-of-n sampling (Beirami et al. 2024 give it as an upper bound). With
``optimal_samples=n`` it adds ``optimal_objective`` (a Monte Carlo J(pi*) from n
samples of pi0 per prompt: a lower bound; see :mod:`rlhf_env.optimum`),
``reference_objective`` (J(pi0) from the same samples) and ``normalized_score``
(biased up, as J* is biased down).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlhf_env.errors import InvalidArgumentError
from rlhf_env.instance import ProblemInstance
from rlhf_env.judging import Judge, instance_of, judge
from rlhf_env.oracles import sigmoid
from rlhf_env.policies import Policy
from rlhf_env.policies.closed_forms import best_of_n_table, kl_rows, soft_value

__all__ = ["evaluate", "exact_metrics", "sampled_metrics", "check_sampled_options",
           "SAMPLED_OPTIONS"]

SAMPLED_OPTIONS = ("n_prompts", "n_samples", "seed", "temperature", "top_p", "best_of_n",
                   "optimal_samples", "per_prompt")
"""The options :func:`sampled_metrics` takes (and the zoo's ``eval:`` entries)."""


def check_sampled_options(options: dict[str, Any], n_available: int | None = None
                          ) -> dict[str, Any]:
    """``options`` of :func:`sampled_metrics` checked (written once: :func:`evaluate` and the
    zoo's config checks call it); an unknown name, a wrong type or a value out of range is
    an :class:`~rlhf_env.errors.InvalidArgumentError` (:class:`InvalidKwargError` for a
    name) naming it. ``n_available``: the env's evaluation prompts, when known. Returns
    the options normalised (``best_of_n`` a tuple)."""
    import math

    from rlhf_env.errors import InvalidKwargError, closest
    from rlhf_env.instance import short

    unknown = [k for k in options if k not in SAMPLED_OPTIONS]
    if unknown:
        raise InvalidKwargError(f"unknown evaluation option(s) {unknown}."
                                f"{closest(unknown[0], SAMPLED_OPTIONS)} Valid: "
                                f"{', '.join(SAMPLED_OPTIONS)}.")
    out = dict(options)

    def integer(name: str, value: Any, low: int, none_ok: bool = False) -> None:
        if value is None and none_ok:
            return
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidArgumentError(
                f"evaluation option {name} must be an int >= {low}"
                f"{' or None' if none_ok else ''}, got {short(value)}")

    def number(name: str, value: Any, low: float, high: float, low_open: bool) -> None:
        ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(value) and (value > low if low_open else value >= low) \
            and value <= high
        if not ok:
            raise InvalidArgumentError(
                f"evaluation option {name} must be a number in {'(' if low_open else '['}{low}, "
                f"{high}], got {short(value)}")

    if "n_prompts" in out:
        integer("n_prompts", out["n_prompts"], 1, none_ok=True)
        if n_available is not None and out["n_prompts"] is not None and \
                out["n_prompts"] > n_available:
            raise InvalidArgumentError(
                f"evaluation option n_prompts={out['n_prompts']} exceeds the env's "
                f"{n_available} evaluation prompts")
    if "n_samples" in out:
        integer("n_samples", out["n_samples"], 1)
    if "seed" in out:
        integer("seed", out["seed"], 0)
    if "optimal_samples" in out:
        integer("optimal_samples", out["optimal_samples"], 0)
    if "temperature" in out:
        number("temperature", out["temperature"], 0.0, 1e3, low_open=False)
    if out.get("top_p") is not None:
        number("top_p", out["top_p"], 0.0, 1.0, low_open=True)
    if "best_of_n" in out:
        b = out["best_of_n"]
        if isinstance(b, (str, bytes)) or not isinstance(b, (list, tuple)) or any(
                isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in b):
            raise InvalidArgumentError(
                f"evaluation option best_of_n must be a list of ints >= 1, got {short(b)}")
        out["best_of_n"] = tuple(int(n) for n in b)
    if "per_prompt" in out and not isinstance(out["per_prompt"], bool):
        raise InvalidArgumentError(
            f"evaluation option per_prompt must be True or False, got {short(out['per_prompt'])}")
    return out


def evaluate(policy: Policy, env: Any, **options: Any) -> dict[str, float]:
    """Evaluate ``policy`` on ``env``'s held-out prompts; see the module docstring.

    Args:
        policy: any :class:`~rlhf_env.policies.Policy` over the env's responses.
        env: an env made by :func:`rlhf_env.make` (wrapped or not), a vector view, or the
            instance.
        **options: evaluation options of sampled envs (:func:`sampled_metrics`); exact envs
            take none.

    Returns:
        A dict of floats (nats for ``kl``; the gold reward's units for the rest).
    """
    inst = instance_of(env)
    if inst.exact:
        if options:
            raise InvalidArgumentError(
                f"evaluation on an exact env is exact and takes no options, got {sorted(options)}")
        return exact_metrics(policy, inst, judge(inst))
    options = check_sampled_options(options, len(inst.eval_prompts))
    from rlhf_env.progress import timed

    n = options.get("n_prompts") or len(inst.eval_prompts)
    with timed(f"evaluating on {n} held-out prompts of {inst.name}"):
        return sampled_metrics(policy, inst, judge(inst), **options)


def exact_metrics(policy: Policy, inst: ProblemInstance, j: Judge) -> dict[str, float]:
    """Exact metrics on a finite-action env (sums over every candidate response)."""
    catalog = inst.catalog
    prompts = list(inst.eval_prompts)
    pid = catalog.prompt_ids(prompts)
    k = len(catalog.responses)
    with torch.no_grad():
        logp = policy.log_prob(
            [p for p in prompts for _ in range(k)], list(catalog.responses) * len(prompts)
        ).double().reshape(len(prompts), k).cpu().numpy()
    pi = np.exp(logp)
    mass = pi.sum(axis=1)
    if not np.allclose(mass, 1.0, atol=1e-6):
        raise InvalidArgumentError(
            f"the policy puts mass {mass.min():.6f}..{mass.max():.6f} on the candidates of some "
            "prompts (must be 1): exact evaluation needs a policy over the env's candidates")
    log_ref = inst.reference.log_probs_table().detach().double().cpu().numpy()[pid]
    ref = np.exp(log_ref)
    r = j.reward_table()[pid]
    eta = inst.eta

    gold = float(np.mean((pi * r).sum(axis=1)))
    kl = max(float(np.mean(kl_rows(pi, logp, log_ref))), 0.0)  # clamp rounding noise at pi0
    win = float(np.mean(np.einsum(
        "na,nb,nab->n", pi, ref, sigmoid(r[:, :, None] - r[:, None, :]))))
    optimal = float(np.mean(soft_value(log_ref, r, eta)))  # J(pi*) = eta E_x log E_pi0 e^{r/eta}
    reference = float(np.mean((ref * r).sum(axis=1)))
    objective = gold - eta * kl
    points = {}
    pi_star = np.exp(j.optimal_policy().log_probs_table().detach().numpy()[pid])
    for name, q in [("optimal", pi_star)] + [
        (f"best_of_{n}", best_of_n_table(ref, r, n)) for n in (1, 2, 4, 8, 16, 32, 64)
    ]:
        points[f"{name}/gold_reward"] = float(np.mean((q * r).sum(axis=1)))
        points[f"{name}/kl"] = max(0.0, float(np.mean(
            kl_rows(q, np.log(np.clip(q, 1e-300, None)), log_ref))))
    return {
        "gold_reward": gold,
        "kl": kl,
        "objective": objective,
        "win_rate": win,
        "optimal_objective": optimal,
        "reference_objective": reference,
        "normalized_score": (objective - reference) / (optimal - reference),
        **points,
    }


def _token_exact(policy: Policy, reference: Policy) -> bool:
    """Whether the KL can score exactly the tokens sampled: both policies are causal LMs over
    one vocabulary (so the policy's sampled token ids mean the same to pi0)."""
    from rlhf_env.policies.causal_lm import CausalLMPolicy

    return (isinstance(policy, CausalLMPolicy) and isinstance(reference, CausalLMPolicy)
            and policy.eos_id == reference.eos_id
            and (policy.tokenizer is reference.tokenizer
                 or policy.tokenizer.get_vocab() == reference.tokenizer.get_vocab()))


def _mean_stderr(per_prompt: np.ndarray) -> tuple[float, float]:
    n = len(per_prompt)
    sd = float(per_prompt.std(ddof=1)) if n > 1 else float("nan")
    return float(per_prompt.mean()), float(sd / np.sqrt(n))


def sampled_metrics(
    policy: Policy,
    inst: ProblemInstance,
    j: Judge,
    *,
    n_prompts: int | None = None,
    n_samples: int = 4,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float | None = None,
    best_of_n: tuple[int, ...] = (1, 4, 16),
    optimal_samples: int = 0,
    per_prompt: bool = False,
) -> dict[str, Any]:
    """Monte Carlo metrics on a sampled env; see the module docstring.

    Args:
        n_prompts: the first ``n_prompts`` held-out prompts (default: all of them).
        n_samples: policy (and pi0) samples per prompt.
        seed: seeds the sampling generator, so an evaluation is reproducible.
        temperature: the policy's sampling temperature; the KL is that of the tempered
            policy (causal LM policies only, otherwise 1).
        top_p: the policy's nucleus threshold (None: its own default; causal LMs only).
        best_of_n: the n of the best-of-n reference points (empty to skip).
        optimal_samples: > 0 adds a Monte Carlo J(pi*) from that many pi0 samples per prompt
            (:func:`rlhf_env.optimum.optimal_objective`, a lower bound; cached on the judge),
            J(pi0) from the same samples, and ``normalized_score`` against them.
        per_prompt: also return ``per_prompt``: ``{metric: list}``, each metric's mean over
            one prompt's samples, prompt by prompt (in ``env.eval_prompts`` order), for
            comparisons paired by prompt.
    """
    check_sampled_options({"n_prompts": n_prompts, "n_samples": n_samples, "seed": seed,
                           "temperature": temperature, "top_p": top_p, "best_of_n": best_of_n,
                           "optimal_samples": optimal_samples}, len(inst.eval_prompts))
    prompts = list(inst.eval_prompts[:n_prompts] if n_prompts else inst.eval_prompts)
    if not prompts or n_samples < 1:
        raise InvalidArgumentError(
            f"need at least one prompt and one sample (n_prompts={n_prompts}, "
            f"n_samples={n_samples})"
        )
    p, m = len(prompts), n_samples
    gen = torch.Generator().manual_seed(seed)
    reference = inst.reference
    flat_p = [x for x in prompts for _ in range(m)]
    if _token_exact(policy, reference):
        seqs = [s for row in policy.sample_sequences(prompts, n=m, temperature=temperature,
                                                      top_p=top_p, generator=gen) for s in row]
        ys = [s.text for s in seqs]
        ctx, toks = [s.context_ids for s in seqs], [s.token_ids for s in seqs]
        # one forward pass of the policy and one of pi0 over the samples (each prompt once):
        # the log-ratio and the exact token KL come from the same logits
        scores = policy.score_samples(reference, ctx, toks, temperature=temperature,
                                      top_p=top_p)
        log_ratio = (scores["log_q"] - scores["log_p0"]).numpy()
        kl = scores["kl"].numpy()
        n_tokens = np.array([len(s.token_ids) - s.finished for s in seqs], dtype=np.float64)
    else:
        if temperature != 1.0 or top_p is not None:
            raise InvalidArgumentError(
                f"temperature={temperature!r} and top_p={top_p!r} change the distribution a "
                f"{type(policy).__name__} samples from, and its log_prob cannot score that "
                "distribution, so the KL would be of another policy: evaluate it at "
                "temperature 1 and its own top_p (only causal LM policies over pi0's tokenizer "
                "take these options)")
        ys = [y for row in policy.sample(prompts, n=m, generator=gen) for y in row]
        with torch.no_grad():
            log_ratio = (policy.log_prob(flat_p, ys).double().cpu()
                         - reference.log_prob(flat_p, ys).double().cpu()).numpy()
        kl, n_tokens = log_ratio, None
    ref_ys = [y for row in reference.sample(prompts, n=m, generator=gen) for y in row]
    r = j.gold_rewards(flat_p, ys)
    r_ref = j.gold_rewards(flat_p, ref_ys)
    win = sigmoid(r - r_ref)

    def per_prompt_means(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, dtype=np.float64).reshape(p, m).mean(axis=1)

    out: dict[str, float] = {}
    series = [("gold_reward", r), ("kl", kl), ("kl_log_ratio", log_ratio),
              ("objective", r - inst.eta * kl), ("win_rate", win),
              ("mean_length", np.array([len(y) for y in ys], dtype=np.float64))]
    if n_tokens is not None:
        series.append(("mean_tokens", n_tokens))
    rows: dict[str, list[float]] = {}
    for key, values in series:
        v = per_prompt_means(values)
        rows[key] = v.tolist()
        out[key], out[f"{key}_stderr"] = _mean_stderr(v)
    if best_of_n:
        n_max = max(best_of_n)
        pool = [y for row in reference.sample(prompts, n=n_max, generator=gen) for y in row]
        rb = j.gold_rewards([x for x in prompts for _ in range(n_max)], pool).reshape(p, n_max)
        for n in sorted(set(best_of_n)):
            out[f"best_of_{n}/gold_reward"] = float(rb[:, :n].max(axis=1).mean())
            out[f"best_of_{n}/kl"] = float(np.log(n) - (n - 1) / n)
    if optimal_samples:
        from rlhf_env.optimum import optimal_objective

        star = optimal_objective(inst, n_samples=optimal_samples, n_prompts=n_prompts,
                                 seed=seed + 1)
        out.update(star)
        gap = star["optimal_objective"] - star["reference_objective"]
        out["normalized_score"] = (out["objective"] - star["reference_objective"]) / gap
    out["n_prompts"], out["n_samples"] = float(p), float(m)
    if per_prompt:
        out["per_prompt"] = rows
    return out
