"""The objective composes dgrpo.losses exactly: each term against a direct call on full logits."""

from typing import get_args

import pytest
import torch

from dgrpo.config import METHODS
from dgrpo.logprobs import completion_logprobs, gathered_logits, logprobs_and_kl
from dgrpo.losses import (
    aggregate,
    clipped_pg,
    combine_advantage_level,
    kl_to_ref,
    reverse_kl_sampled,
    reverse_kl_topk,
)
from dgrpo.losses.distill import ReverseKLEstimator
from dgrpo.objective import TERMS, Signals, Weights, active_terms, diagnostics, objective, teacher_signals
from tests.dgrpo.reference import dense_forward_kl, dense_reverse_kl

N, C, H, V, K, TAU = 3, 4, 8, 30, 5, 0.8
W = Weights(
    lam=0.7, beta=0.1, eps_low=0.2, eps_high=0.28, temperature=TAU, aggregation="token", constant_per_row=10
)


@pytest.mark.parametrize(
    ("method", "estimator", "combine", "beta", "names"),
    [
        ("sft", "full", "loss", 0.5, ("ce",)),
        ("kd", "full", "loss", 0.0, ("kd",)),
        ("grpo", "full", "loss", 0.0, ("pg",)),
        ("grpo", "full", "loss", 0.04, ("pg", "ref_kl")),
        ("opd", "full", "loss", 0.0, ("opd_full",)),
        ("opd", "topk", "advantage", 0.0, ("pg_opd",)),
        ("dgrpo", "full", "loss", 0.0, ("pg", "opd_full")),
        ("dgrpo", "sampled", "loss", 0.0, ("pg", "opd_sampled")),
        ("dgrpo", "topk", "advantage", 0.1, ("pg_opd", "ref_kl")),
    ],
)
def test_methods_map_to_terms(method, estimator, combine, beta, names):
    assert active_terms(METHODS[method], estimator, combine, beta) == names


def test_every_estimator_has_a_term():
    assert {f"opd_{name}" for name in get_args(ReverseKLEstimator)} <= set(TERMS)
    assert teacher_signals(("opd_topk",)) == {"topk", "logp"}
    assert teacher_signals(("pg",)) == {"logp"}  # always: the kl_teacher metric


@pytest.fixture
def tensors():
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    h = torch.randn(N, C, H, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, H, generator=gen, dtype=torch.float64)
    h_t = torch.randn(N, C, H, generator=gen, dtype=torch.float64)
    w_t = torch.randn(V + 2, H, generator=gen, dtype=torch.float64)  # padded teacher embedding
    targets = torch.randint(0, V, (N, C), generator=gen)
    return mask, h, w, h_t, w_t, targets, gen


def test_loss_level_dgrpo_full_equals_direct_losses(tensors):
    mask, h, w, h_t, w_t, targets, gen = tensors
    adv = torch.randn(N, generator=gen, dtype=torch.float64)
    logp_old = completion_logprobs(h.detach() + 0.05, w, targets, TAU)
    logp, kl = logprobs_and_kl(h, w, targets, h_t, w_t, TAU, chunk_size=2)
    s = Signals(mask=mask, logp=logp, adv=adv, logp_old=logp_old, kl_teacher=kl)
    loss, stats = objective(("pg", "opd_full"), s, W)
    pg, _ = clipped_pg(logp, logp_old, adv, W.eps_low, W.eps_high, mask)
    full = dense_reverse_kl(h @ w.T, h_t @ w_t[:V].T, TAU)  # the naive [N, C, V] path
    want = aggregate(pg + W.lam * full, mask)
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    (got_grad,) = torch.autograd.grad(loss, h, retain_graph=True)
    (want_grad,) = torch.autograd.grad(want, h)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)
    assert set(stats) >= {"loss/pg", "loss/opd_full", "clip_fraction", "approx_kl"}


def test_kd_equals_forward_kl(tensors):
    mask, h, w, h_t, w_t, targets, _ = tensors
    logp, kl = logprobs_and_kl(h, w, targets, h_t, w_t, 2.0, chunk_size=3, kl="forward")
    loss, _ = objective(("kd",), Signals(mask=mask, logp=logp, kl_teacher=kl), W)
    want = aggregate(dense_forward_kl(h @ w.T, h_t @ w_t[:V].T, 2.0), mask)
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)


def test_topk_term_gathers_student_logits_like_the_full_logits_path(tensors):
    """The trainer's topk inputs (logits at the teacher's ids and at y_t, chunked log π_θ(y_t))
    give the value and gradient of the estimator on the full [N, C, V] log-softmax."""
    mask, h, w, h_t, w_t, targets, gen = tensors
    teacher_logp = torch.log_softmax(h_t @ w_t[:V].T / TAU, -1)
    top_logp, top_ids = teacher_logp.topk(K, -1)
    ids = torch.cat([top_ids, targets.unsqueeze(-1)], -1)
    student_topk = gathered_logits(h, w, ids, chunk_size=3)  # what the trainer computes
    logp = completion_logprobs(h, w, targets, TAU, chunk_size=2)
    s = Signals(mask=mask, logp=logp, student_topk=student_topk, teacher_topk_logp=top_logp)
    loss, _ = objective(("opd_topk",), s, W)
    student_logp = torch.log_softmax(h @ w.T / TAU, -1).gather(-1, top_ids)  # the naive path
    want = aggregate(W.lam * reverse_kl_topk(student_logp, top_logp), mask)
    torch.testing.assert_close(loss, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(loss, h)[0], torch.autograd.grad(want, h)[0])


def test_advantage_level_sampled_and_ref_terms(tensors):
    mask, h, w, h_t, w_t, targets, gen = tensors
    logp = completion_logprobs(h, w, targets, TAU)
    logp_teacher = completion_logprobs(h_t, w_t[:V], targets, TAU)
    logp_ref = logp.detach() - 0.1
    adv = torch.randn(N, generator=gen, dtype=torch.float64)
    s = Signals(mask=mask, logp=logp, adv=adv, logp_teacher=logp_teacher, logp_ref=logp_ref)
    loss, _ = objective(("pg_opd", "ref_kl"), s, W)
    adv_tok = combine_advantage_level(adv, logp.detach(), logp_teacher, W.lam)
    pg, _ = clipped_pg(logp, logp.detach(), adv_tok, W.eps_low, W.eps_high, mask)
    torch.testing.assert_close(loss, aggregate(pg + W.beta * kl_to_ref(logp, logp_ref), mask))
    sampled, _ = objective(("opd_sampled",), s, W)
    torch.testing.assert_close(sampled, aggregate(W.lam * reverse_kl_sampled(logp, logp_teacher), mask))
    # on-policy (no π_old): ratio 1 in value, so the pg term is −mean(Â)
    assert diagnostics(s, ("opd_sampled",))["kl_teacher"] == pytest.approx(
        ((logp - logp_teacher)[mask]).mean().item()
    )


def test_constant_aggregation_uses_the_per_row_normaliser(tensors):
    mask, h, w, _, _, targets, _ = tensors
    logp = completion_logprobs(h, w, targets)
    weights = Weights(**{**W.__dict__, "aggregation": "constant", "constant_per_row": 7.0})
    loss, _ = objective(("ce",), Signals(mask=mask, logp=logp), weights)
    torch.testing.assert_close(loss, -(logp[mask]).sum() / (7.0 * N))
