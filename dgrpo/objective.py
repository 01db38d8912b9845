"""The one objective: active loss terms (from the METHODS table) summed per token, aggregated.

Pure functions of tensors and floats: the trainer computes `Signals` (student log-probs with
gradient, teacher and reference signals without), picks term names with `active_terms`, and
calls `objective`. Every formula lives in `dgrpo.losses`; this module only decides which terms
apply and what each reads. `TERMS` is the registry: a term's function, the teacher signal it
needs ("hidden" / "logp" / "topk") and the exact KL the student's head pass must compute.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from dgrpo.config import Terms
from dgrpo.losses import (
    aggregate,
    clipped_pg,
    combine_advantage_level,
    cross_entropy,
    kl_to_ref,
    masked_mean,
    reverse_kl_sampled,
    reverse_kl_topk,
)
from dgrpo.mismatch import truncated_is_weights


@dataclass
class Signals:
    """Per-token inputs of one micro-batch: N completions × C positions (completion tokens only)."""

    mask: Tensor  # [N, C] bool: tokens the loss counts
    logp: Tensor  # [N, C] log π_θ(y_t) at τ, with gradient
    entropy: Tensor | None = None  # [N, C] entropy of π_θ(·|s_t), detached (diagnostic)
    adv: Tensor | None = None  # [N] group-relative advantages A_i
    logp_old: Tensor | None = None  # [N, C] log π_old(y_t); None: on-policy (π_old = π_θ in value)
    logp_ref: Tensor | None = None  # [N, C] log π_ref(y_t)
    logp_teacher: Tensor | None = None  # [N, C] log π_T(y_t) at τ
    kl_teacher: Tensor | None = None  # [N, C] exact chunked KL with gradient (reverse: opd; forward: kd)
    # [N, C, K + 1] raw student logits h·W at the teacher's top-K ids, then at y_t, with gradient
    student_topk: Tensor | None = None
    teacher_topk_logp: Tensor | None = None  # [N, C, K] log π_T at τ of its K likeliest tokens
    logp_sampler: Tensor | None = None  # [N, C] log π_sampler(y_t) reported by a rollout server


@dataclass(frozen=True)
class Weights:
    """The scalar knobs of one step's objective (floats, never the config object)."""

    lam: float  # λ at this step (after the schedule)
    beta: float  # β of the reference KL
    eps_low: float
    eps_high: float
    temperature: float  # τ shared by sampling, π_old, π_θ and the teacher
    aggregation: str  # token | seq | constant
    constant_per_row: float  # Dr. GRPO normaliser per completion row, for aggregation=constant
    tis_cap: float | None = None  # C of truncated importance sampling (server rollouts; dgrpo.mismatch)


@dataclass(frozen=True)
class BatchTotals:
    """The whole optimizer batch a micro-batch belongs to: the aggregation's denominators."""

    rows: int  # completion rows
    tokens: float  # Σ loss mask


@dataclass(frozen=True)
class Term:
    fn: Callable[[Signals, Weights], tuple[Tensor, dict[str, Tensor]]]  # -> per-token [N, C], stats
    teacher: str | None = None  # teacher signal it reads: "hidden", "logp" or "topk"
    kl: str | None = None  # exact KL the student's head pass computes: "reverse" or "forward"
    reference: bool = False  # reads log π_ref


def _logp_old(s: Signals) -> Tensor:
    # on-policy: π_old equals π_θ in value; detach so no gradient flows through the ratio's base
    return s.logp.detach() if s.logp_old is None else s.logp_old


def _pg(s: Signals, w: Weights):
    return clipped_pg(s.logp, _logp_old(s), s.adv, w.eps_low, w.eps_high, s.mask)


def _pg_opd(s: Signals, w: Weights):
    """Advantage-level dGRPO: Â_t = A_i − λ·(log π_old − log π_T)(y_t) inside the clipped surrogate."""
    adv = combine_advantage_level(s.adv, _logp_old(s), s.logp_teacher, w.lam)
    return clipped_pg(s.logp, _logp_old(s), adv, w.eps_low, w.eps_high, s.mask)


def _opd_full(s: Signals, w: Weights):
    """λ·KL_t with the exact reverse KL from `logprobs.logprobs_and_kl`: Σ_v p_θ(v)(log p_θ(v) −
    log p_T(v)) at τ, from hidden states, without building [N, C, V] logits."""
    return w.lam * s.kl_teacher, {}


def _opd_topk(s: Signals, w: Weights):
    """λ·KL_t over the teacher's top-K plus a tail bucket. The student's log-normaliser at τ comes
    from the sampled token, log Z_t = z(y_t)/τ − log π_θ(y_t), so it carries the gradient of the
    whole vocabulary without any [N, C, V] logits; must equal `losses.reverse_kl_topk` on the
    full log-softmax gathered at the teacher's ids."""
    logits = s.student_topk / w.temperature
    log_norm = logits[..., -1] - s.logp
    logp_topk = logits[..., :-1] - log_norm.unsqueeze(-1)
    return w.lam * reverse_kl_topk(logp_topk, s.teacher_topk_logp), {}


def _opd_sampled(s: Signals, w: Weights):
    return w.lam * reverse_kl_sampled(s.logp, s.logp_teacher, s.logp_old), {}


def _ce(s: Signals, w: Weights):
    return cross_entropy(s.logp), {}


def _kd(s: Signals, w: Weights):
    """Forward KL to the teacher from `logprobs.logprobs_and_kl(kl="forward")`: Σ_v p_T(v)(log
    p_T(v) − log p_θ(v)) at τ_kd, from hidden states."""
    return s.kl_teacher, {}


def _ref_kl(s: Signals, w: Weights):
    return w.beta * kl_to_ref(s.logp, s.logp_ref), {}


TERMS: dict[str, Term] = {
    "pg": Term(_pg),
    "pg_opd": Term(_pg_opd, teacher="logp"),
    "opd_full": Term(_opd_full, teacher="hidden", kl="reverse"),
    "opd_topk": Term(_opd_topk, teacher="topk"),
    "opd_sampled": Term(_opd_sampled, teacher="logp"),
    "ce": Term(_ce),
    "kd": Term(_kd, teacher="hidden", kl="forward"),
    "ref_kl": Term(_ref_kl, reference=True),
}


def active_terms(terms: Terms, estimator: str, combine: str, beta: float) -> tuple[str, ...]:
    """Names in TERMS for one row of METHODS and the loss knobs that shape it."""
    names: list[str] = []
    if terms.opd and combine == "advantage":  # OPD folded into the advantage: one surrogate
        names.append("pg_opd")
    else:
        names += ["pg"] if terms.pg else []
        names += [f"opd_{estimator}"] if terms.opd else []
    names += ["ce"] if terms.ce else []
    names += ["kd"] if terms.kd else []
    names += ["ref_kl"] if terms.ref_kl and beta > 0 else []
    return tuple(names)


def teacher_signals(names: tuple[str, ...]) -> frozenset[str]:
    """Teacher signals the active terms read, plus "logp" for the kl_teacher metric."""
    return frozenset({TERMS[name].teacher for name in names} - {None}) | {"logp"}


def kl_kind(names: tuple[str, ...]) -> str | None:
    """The exact KL ("reverse" / "forward") the student's head pass must compute, if any."""
    return next((TERMS[name].kl for name in names if TERMS[name].kl), None)


def uses_reference(names: tuple[str, ...]) -> bool:
    return any(TERMS[name].reference for name in names)


def objective(
    names: tuple[str, ...], s: Signals, w: Weights, totals: BatchTotals | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """L = aggregate(Σ_terms per-token loss, mask) and detached statistics (one `loss/<term>` each).

    With `totals`, L and the `loss/<term>` values are this micro-batch's share of the whole
    batch's aggregate (summing over micro-batches gives the batch's loss exactly).
    """
    rows = s.mask.shape[0] if totals is None else totals.rows
    constant = w.constant_per_row * rows
    total = None if totals is None else (totals.tokens if w.aggregation == "token" else totals.rows)
    reduce = partial(aggregate, mask=s.mask, mode=w.aggregation, constant=constant, total=total)
    per_token = torch.zeros_like(s.logp)
    stats: dict[str, Tensor] = {}
    is_weight = None
    if s.logp_sampler is not None:  # server-sampled tokens: every term is weighted by w_t
        is_weight, stats = truncated_is_weights(_logp_old(s), s.logp_sampler, s.mask, w.tis_cap)
    for name in names:
        term, term_stats = TERMS[name].fn(s, w)
        term = term if is_weight is None else term * is_weight
        per_token = per_token + term
        # a logged statistic: no gradient flows through the per-term reports
        stats[f"loss/{name}"] = reduce(term.detach())
        stats.update(term_stats)
    return reduce(per_token), stats


def diagnostics(s: Signals, names: tuple[str, ...]) -> dict[str, Tensor]:
    """Detached per-token averages: entropy, NLL and the KL to the teacher (exact or k1)."""
    with torch.no_grad():
        out = {"nll": masked_mean(-s.logp, s.mask)}
        if s.entropy is not None:
            out["entropy"] = masked_mean(s.entropy, s.mask)
        kind = kl_kind(names)
        if kind == "forward":  # kd: fixed responses, so only the exact forward KL means anything
            out["kl_teacher_forward"] = masked_mean(s.kl_teacher, s.mask)
        elif kind == "reverse":
            out["kl_teacher"] = masked_mean(s.kl_teacher, s.mask)
        elif s.logp_teacher is not None:  # k1: the sampled-token log-ratio, unbiased for y ~ π_θ
            out["kl_teacher"] = masked_mean(s.logp - s.logp_teacher, s.mask)
        return out
