"""dgrpo.losses against brute-force float64 references (values and gradients), stop-gradient
placement, masking, temperature, chunking and degenerate cases."""

import math
import statistics
from typing import get_args

import pytest
import torch

from dgrpo.losses import (
    ADVANTAGE_SCALES,
    AGGREGATIONS,
    LAMBDA_SCHEDULES,
    AdvantageScale,
    AggregationMode,
    LambdaScheduleKind,
    ReverseKLEstimator,
    aggregate,
    clipped_pg,
    combine_advantage_level,
    cross_entropy,
    group_advantages,
    kl_to_ref,
    lambda_schedule,
    masked_mean,
    reverse_kl_sampled,
    reverse_kl_topk,
)
from dgrpo.objective import TERMS
from tests.dgrpo.reference import dense_forward_kl, dense_reverse_kl

B, T, V, K = 3, 5, 7, 4
F64 = torch.float64


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def grads(output, inputs):
    return torch.autograd.grad(output, inputs, allow_unused=True)


def randn(*shape, seed=0, scale=1.0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=gen, dtype=F64)).requires_grad_(grad)


def mask_bt():
    """[B, T] mask with ragged lengths: 5, 3 and 1 real tokens."""
    lengths = torch.tensor([5, 3, 1])
    return torch.arange(T)[None, :] < lengths[:, None]


def topk_ids(seed=0):
    """[B, T, K] distinct vocabulary ids per position."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(V, generator=gen)[:K] for _ in range(B * T)]).view(B, T, K)


# ---------------------------------------------------------------- naive references (float64)


def naive_log_softmax(z):
    """Plain full softmax of one position's logits, then its log."""
    e = torch.exp(z - z.max())
    return torch.log(e / e.sum())


def per_position(fn, *tensors):
    """Apply fn to every (b, t) position in a python loop and stack to [B, T]."""
    b_size, t_size = tensors[0].shape[:2]
    rows = [torch.stack([fn(*(x[b, t] for x in tensors)) for t in range(t_size)]) for b in range(b_size)]
    return torch.stack(rows)


def ref_reverse_kl(zs, zt, tau):
    logp, logq = naive_log_softmax(zs / tau), naive_log_softmax(zt.detach() / tau)
    return sum(logp[v].exp() * (logp[v] - logq[v]) for v in range(zs.shape[0]))


def ref_forward_kl(zs, zt, tau):
    logp, logq = naive_log_softmax(zs / tau), naive_log_softmax(zt.detach() / tau)
    return sum(logq[v].exp() * (logq[v] - logp[v]) for v in range(zs.shape[0]))


def ref_topk_kl(zs, zt, ids, tau):
    """Both full softmaxes coarsened to the ids' tokens plus one bucket for the rest."""
    logp, logq = naive_log_softmax(zs / tau), naive_log_softmax(zt.detach() / tau)
    inside = [int(i) for i in ids]
    outside = [v for v in range(zs.shape[0]) if v not in inside]
    p = [logp[v].exp() for v in inside] + [sum(logp[v].exp() for v in outside)]
    q = [logq[v].exp() for v in inside] + [sum(logq[v].exp() for v in outside)]
    return sum(pk * (torch.log(pk) - torch.log(qk)) for pk, qk in zip(p, q, strict=True))


def ref_clipped_pg(lp, lp_old, a, eps_low, eps_high):
    ratio = torch.exp(lp - lp_old.detach())
    a = a.detach()
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    unclipped_term, clipped_term = ratio * a, clipped * a
    return -(unclipped_term if unclipped_term <= clipped_term else clipped_term)


def ref_aggregate(loss, mask, mode, constant=None):
    w = mask.to(F64)
    total = sum(loss[b, t] * w[b, t] for b in range(loss.shape[0]) for t in range(loss.shape[1]))
    if mode == "token":
        count = float(w.sum())
        return total / count if count else loss.new_zeros(())
    if mode == "constant":
        return total / constant
    row_means = []
    for b in range(loss.shape[0]):
        count = float(w[b].sum())
        row = sum(loss[b, t] * w[b, t] for t in range(loss.shape[1]))
        row_means.append(row / count if count else loss.new_zeros(()))
    return sum(row_means) / len(row_means)


def ref_group_advantages(rewards, group_size, scale, eps):
    values = [float(r) for r in rewards.reshape(-1)]
    groups = [values[i : i + group_size] for i in range(0, len(values), group_size)]
    batch_std = statistics.pstdev(values)
    out = []
    for group in groups:
        mean = sum(group) / len(group)
        std = {"group": statistics.pstdev(group), "batch": batch_std}.get(scale)
        for r in group:
            centered = 0.0 if len(set(group)) == 1 else r - mean
            out.append(centered if scale == "none" else centered / (std + eps))
    return torch.tensor(out, dtype=F64)


# ---------------------------------------------------------------- registries


def test_registries_cover_their_literals():
    # estimator names dispatch through the objective's term registry
    assert {f"opd_{name}" for name in get_args(ReverseKLEstimator)} <= set(TERMS)
    assert set(AGGREGATIONS) == set(get_args(AggregationMode))
    assert set(ADVANTAGE_SCALES) == set(get_args(AdvantageScale))
    assert set(LAMBDA_SCHEDULES) == set(get_args(LambdaScheduleKind))


# ---------------------------------------------------------------- group_advantages


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("two_dim", [False, True])
def test_group_advantages_match_reference(scale, two_dim):
    rewards = randn(3, 4, seed=1)
    got = group_advantages(rewards if two_dim else rewards.reshape(-1), 4, scale, eps=1e-6)
    assert got.shape == (12,)
    close(got, ref_group_advantages(rewards, 4, scale, 1e-6))


def test_group_advantages_scale_by_hand():
    rewards = torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=F64)  # two groups of 2
    close(group_advantages(rewards, 2, "none"), torch.tensor([-0.5, 0.5, -1.0, 1.0], dtype=F64))
    # population std of (0, 1) is 0.5; of (2, 4) is 1
    close(group_advantages(rewards, 2, "group", eps=0.0), torch.tensor([-1.0, 1, -1, 1], dtype=F64))
    batch_std = math.sqrt(((rewards - rewards.mean()) ** 2).mean().item())
    expected = torch.tensor([-0.5, 0.5, -1.0, 1.0], dtype=F64) / batch_std
    close(group_advantages(rewards, 2, "batch", eps=0.0), expected)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_tied_group_gives_exact_zeros_and_zero_pg_loss(scale):
    # 0.1 and 0.3 are not representable: a naive mean leaves rounding noise that ε would amplify
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.0, 1.0, 0.5], dtype=torch.float32)
    adv = group_advantages(rewards, 3, scale)
    assert torch.equal(adv[:6], torch.zeros(6))
    assert adv[6:].abs().sum() > 0
    all_tied = group_advantages(torch.full((6,), 0.7), 3, scale)
    assert torch.equal(all_tied, torch.zeros(6))
    logp = randn(6, T, seed=2, grad=True)
    per_token, _ = clipped_pg(logp, logp.detach() + 0.1, all_tied, 0.2, 0.2)
    loss = aggregate(per_token, torch.ones(6, T, dtype=torch.bool))
    assert loss.item() == 0.0
    assert torch.equal(grads(loss, logp)[0], torch.zeros_like(logp))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_size_one_gives_zeros(scale):
    adv = group_advantages(torch.tensor([0.0, 1.0, 5.0]), 1, scale)
    assert torch.equal(adv, torch.zeros(3))


def test_group_advantages_accept_integer_rewards():
    close(group_advantages(torch.tensor([0, 1]), 2, "none"), torch.tensor([-0.5, 0.5]))


def test_group_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="G=3"):
        group_advantages(torch.zeros(2, 4), 3)
    with pytest.raises(ValueError, match=">= 1"):
        group_advantages(torch.zeros(2), 0)
    with pytest.raises(ValueError, match="unknown scale"):
        group_advantages(torch.zeros(2), 2, "std")  # type: ignore[arg-type]


# ---------------------------------------------------------------- clipped_pg


@pytest.mark.parametrize("token_level_adv", [False, True])
@pytest.mark.parametrize(("eps_low", "eps_high"), [(0.2, 0.2), (0.2, 0.28)])
def test_clipped_pg_matches_reference(token_level_adv, eps_low, eps_high):
    logp = randn(B, T, seed=3, grad=True)
    logp_old = (logp.detach() + randn(B, T, seed=4, scale=0.3)).requires_grad_()
    adv = randn(B, T, seed=5) if token_level_adv else randn(B, seed=5)
    adv_bt = adv if token_level_adv else adv[:, None].expand(B, T)
    got, _ = clipped_pg(logp, logp_old, adv, eps_low, eps_high)
    ref = per_position(lambda a, b, c: ref_clipped_pg(a, b, c, eps_low, eps_high), logp, logp_old, adv_bt)
    close(got, ref)
    weights = randn(B, T, seed=6)
    close(grads((got * weights).sum(), logp)[0], grads((ref * weights).sum(), logp)[0])


def test_clipped_pg_by_hand():
    # ratios 1.5, 0.5, 0.5, 1.5, 1.25 against π_old; ε_low = 0.2, ε_high = 0.28 (DAPO)
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.25]], dtype=F64)
    logp = ratios.log().requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]], dtype=F64)
    per_token, stats = clipped_pg(logp, torch.zeros_like(logp), adv, 0.2, 0.28)
    # clip binds for (1.5, A>0) -> -1.28 and (0.5, A<0) -> 0.8, with zero gradient there
    close(per_token, torch.tensor([[-1.28, 0.8, -0.5, 1.5, -1.25]], dtype=F64))
    close(grads(per_token.sum(), logp)[0], torch.tensor([[0.0, 0.0, -0.5, 1.5, -1.25]], dtype=F64))
    close(stats["clip_fraction"], torch.tensor(0.4, dtype=F64))
    close(stats["clip_fraction_low"], torch.tensor(0.2, dtype=F64))
    close(stats["clip_fraction_high"], torch.tensor(0.2, dtype=F64))
    # with the symmetric ε_high = 0.2 the 1.25 ratio is clipped too
    per_token, _ = clipped_pg(logp, torch.zeros_like(logp), adv, 0.2, 0.2)
    assert per_token[0, 4].item() == pytest.approx(-1.2)
    assert grads(per_token[0, 4], logp)[0][0, 4].item() == 0.0


def test_clipped_pg_blocks_gradient_to_old_logp_and_advantages():
    logp = randn(B, T, seed=7, grad=True)
    logp_old = randn(B, T, seed=8, scale=0.1, grad=True)
    adv = randn(B, seed=9, grad=True)
    per_token, stats = clipped_pg(logp, logp_old, adv, 0.2, 0.2)
    g_logp, g_old, g_adv = grads(per_token.sum(), (logp, logp_old, adv))
    assert g_logp is not None and g_old is None and g_adv is None
    assert all(not value.requires_grad for value in stats.values())


def test_clipped_pg_stats_ignore_padding():
    logp = torch.log(torch.tensor([[1.5, 0.5, 100.0], [1.0, 1.0, 1e-3]], dtype=F64))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, 1.0], dtype=F64)
    _, stats = clipped_pg(logp, torch.zeros_like(logp), adv, 0.2, 0.2, mask=mask)
    close(stats["clip_fraction"], torch.tensor(1 / 3, dtype=F64))
    close(stats["ratio_mean"], torch.tensor(1.0, dtype=F64))
    close(stats["ratio_max"], torch.tensor(1.5, dtype=F64))
    close(stats["ratio_min"], torch.tensor(0.5, dtype=F64))
    expected_kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 3
    close(stats["approx_kl"], torch.tensor(expected_kl, dtype=F64))
    _, empty = clipped_pg(logp, logp, adv, 0.2, 0.2, mask=torch.zeros_like(mask))
    assert all(torch.isfinite(value) for value in empty.values())


def test_clipped_pg_rejects_mismatched_advantages():
    with pytest.raises(ValueError, match="adv of shape"):
        clipped_pg(torch.zeros(B, T), torch.zeros(B, T), torch.zeros(B + 1), 0.2, 0.2)


# ---------------------------------------------------------------- reverse_kl_topk


def topk_inputs(zs, zt, tau, k=K):
    """The estimator's inputs: both full log-softmaxes at τ gathered at the teacher's top-k ids."""
    logp_teacher = torch.log_softmax(zt / tau, -1)
    top_logp, ids = logp_teacher.topk(k, -1)
    return torch.log_softmax(zs / tau, -1).gather(-1, ids), top_logp, ids


@pytest.mark.parametrize("tau", [1.0, 0.7])
def test_topk_kl_matches_reference(tau):
    zs = randn(B, T, V, seed=23, scale=2.0, grad=True)
    zt = randn(B, T, V, seed=25, scale=2.0)
    student, teacher, ids = topk_inputs(zs, zt, tau)
    got = reverse_kl_topk(student, teacher)
    expected = per_position(lambda a, b, c: ref_topk_kl(a, b, c, tau), zs, zt, ids)
    close(got, expected)
    weights = randn(B, T, seed=26)
    g_got, g_ref = grads((got * weights).sum(), zs)[0], grads((expected * weights).sum(), zs)[0]
    close(g_got, g_ref)
    outside = torch.ones(B, T, V, dtype=torch.bool).scatter(-1, ids, False)
    assert (g_got[outside] != 0).all()  # tokens outside the top-K get a gradient through the tail


@pytest.mark.parametrize("k", [1, 3, V - 2])
def test_topk_kl_is_a_lower_bound_of_the_exact_kl(k):
    zs = randn(B, T, V, seed=35, scale=2.0)
    zt = randn(B, T, V, seed=36, scale=2.0)
    topk = reverse_kl_topk(*topk_inputs(zs, zt, 1.0, k)[:2])
    full = dense_reverse_kl(zs, zt)
    assert (topk >= -1e-12).all() and (topk <= full + 1e-12).all()
    assert (topk < full - 1e-6).any()  # a real bound here, not the exact value


@pytest.mark.parametrize("k", [V - 1, V])
def test_topk_kl_with_one_or_no_token_left_equals_full_kl(k):
    """A tail of one token (or none) loses nothing: values and gradients are the exact KL's."""
    zs = randn(B, T, V, seed=27, grad=True)
    zt = randn(B, T, V, seed=28)
    topk = reverse_kl_topk(*topk_inputs(zs, zt, 0.7, k)[:2])
    full = dense_reverse_kl(zs, zt, 0.7)
    close(topk, full, tol=1e-9)
    close(grads(topk.sum(), zs)[0], grads(full.sum(), zs)[0], tol=1e-7)


def test_topk_kl_pushes_leaked_student_mass_down():
    """The student puts mass on a token the teacher never predicts (outside its top-K): the
    topk gradient lowers that token's logit, points the way the exact KL's gradient does, and a
    few descent steps shrink the leak and the exact KL."""
    zt = torch.tensor([4.0, 3.0, 2.0, 1.0, -8.0, -8.0, -8.0], dtype=F64).expand(B, T, V)
    zs = torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0, -8.0, -8.0], dtype=F64).expand(B, T, V).clone()
    zs.requires_grad_(True)
    g_topk = grads(reverse_kl_topk(*topk_inputs(zs, zt, 1.0)[:2]).sum(), zs)[0]
    g_full = grads(dense_reverse_kl(zs, zt).sum(), zs)[0]
    assert (g_topk[..., 4] > 0).all()  # descent lowers the leaked token's logit
    cosine = torch.nn.functional.cosine_similarity(g_topk.reshape(-1, V), g_full.reshape(-1, V), dim=-1)
    assert (cosine > 0.9).all()
    z = zs.detach().clone().requires_grad_(True)
    leak_before, kl_before = torch.softmax(z, -1)[..., 4].mean(), dense_reverse_kl(z, zt).mean()
    for _ in range(50):
        loss = reverse_kl_topk(*topk_inputs(z, zt, 1.0)[:2]).sum()
        (g,) = grads(loss, z)
        z = (z - 0.5 * g).detach().requires_grad_(True)
    assert torch.softmax(z, -1)[..., 4].mean() < 0.05 * leak_before
    assert dense_reverse_kl(z, zt).mean() < 0.1 * kl_before


def test_topk_kl_stays_finite_when_the_top_k_holds_all_mass():
    zs = randn(B, T, V, seed=37, grad=True)
    zt = torch.full((B, T, V), -200.0, dtype=F64)
    zt[..., :K] = 0.0  # the tail's mass underflows to 0 in float64
    for dtype in (F64, torch.float32):
        student, teacher, _ = topk_inputs(zs, zt, 1.0)
        got = reverse_kl_topk(student.to(dtype), teacher.to(dtype))
        assert torch.isfinite(got).all() and torch.isfinite(grads(got.sum(), zs)[0]).all()


def test_topk_kl_gives_teacher_no_gradient():
    student = torch.log_softmax(randn(B, T, V, seed=33), -1)[..., :K].requires_grad_(True)
    teacher_logp = torch.log_softmax(randn(B, T, V, seed=34), -1)[..., :K].requires_grad_(True)
    _, g_teacher = grads(reverse_kl_topk(student, teacher_logp).sum(), (student, teacher_logp))
    assert g_teacher is None


# ---------------------------------------------------------------- reverse_kl_sampled


def ref_sampled(lp, lp_teacher, lp_old):
    return torch.exp(lp - lp_old.detach()) * (lp - lp_teacher).detach()


@pytest.mark.parametrize("off_policy", [False, True])
def test_sampled_kl_matches_reference(off_policy):
    logp = randn(B, T, seed=35, grad=True)
    logp_teacher = randn(B, T, seed=36, grad=True)
    logp_old = (logp.detach() + randn(B, T, seed=37, scale=0.2)).requires_grad_()
    got = reverse_kl_sampled(logp, logp_teacher, logp_old if off_policy else None)
    old = logp_old if off_policy else logp.detach()
    expected = per_position(ref_sampled, logp, logp_teacher, old)
    close(got, expected)
    if not off_policy:
        close(got, (logp - logp_teacher).detach())  # on-policy value is the k1 sample itself
    g_logp, g_teacher, g_old = grads(got.sum(), (logp, logp_teacher, logp_old))
    close(g_logp, grads(expected.sum(), logp)[0])
    assert g_teacher is None and g_old is None


@pytest.mark.parametrize("off_policy", [False, True])
def test_sampled_kl_expected_gradient_is_exact_reverse_kl_gradient(off_policy):
    """Enumerate a V=5 vocabulary at one position: E_{y~π_old}[∇ loss(y)] = ∇ KL(π_θ ‖ π_T)."""
    theta = randn(5, seed=38, grad=True)
    teacher_logp = torch.log_softmax(randn(5, seed=39), -1)
    behaviour_logp = torch.log_softmax(randn(5, seed=40), -1) if off_policy else None
    exact = ref_reverse_kl(theta, teacher_logp, 1.0)
    exact_grad = grads(exact, theta)[0]
    sample_logp = torch.log_softmax(theta.detach(), -1) if behaviour_logp is None else behaviour_logp
    expected_value, expected_grad = 0.0, torch.zeros(5, dtype=F64)
    for y in range(5):
        logp_y = torch.log_softmax(theta, -1)[y].view(1, 1)
        old = None if behaviour_logp is None else behaviour_logp[y].view(1, 1)
        loss = reverse_kl_sampled(logp_y, teacher_logp[y].view(1, 1), old).sum()
        weight = sample_logp[y].exp()
        expected_value += weight * loss.detach()
        expected_grad += weight * grads(loss, theta)[0]
    close(expected_value, exact.detach())
    close(expected_grad, exact_grad)
    full = dense_reverse_kl(theta.view(1, 1, 5), teacher_logp.view(1, 1, 5)).sum()
    close(expected_grad, grads(full, theta)[0])


# ---------------------------------------------------------------- kl_to_ref, cross_entropy


def test_kl_to_ref_value_is_reverse_kl_but_its_gradient_is_forward_kl():
    """Exact expectations over a 5-token vocabulary with y ~ π_θ: E[k3] = KL(π_θ ‖ π_ref) and
    E[∇_θ k3] = ∇_θ KL(π_ref ‖ π_θ), which differs from ∇_θ KL(π_θ ‖ π_ref)."""
    theta = randn(5, seed=70, grad=True)
    logp_ref = torch.log_softmax(randn(5, seed=71, scale=1.5), -1)
    weights = torch.softmax(theta.detach(), -1)

    def expected_k3():
        logp = torch.log_softmax(theta, -1)
        return sum(weights[y] * kl_to_ref(logp[y], logp_ref[y]) for y in range(5))

    def kl(reverse: bool):
        logp = torch.log_softmax(theta, -1)
        p, q = (logp, logp_ref) if reverse else (logp_ref, logp)
        return (p.exp() * (p - q)).sum()

    close(expected_k3().detach(), kl(reverse=True).detach())
    grad = grads(expected_k3(), theta)[0]
    close(grad, grads(kl(reverse=False), theta)[0])
    assert not torch.allclose(grad, grads(kl(reverse=True), theta)[0], atol=1e-3)


def test_kl_to_ref_matches_reference_and_blocks_ref_gradient():
    logp = randn(B, T, seed=41, grad=True)
    logp_ref = randn(B, T, seed=42, grad=True)
    got = kl_to_ref(logp, logp_ref)

    def k3(lp, lp_ref):
        delta = lp_ref.detach() - lp
        return torch.exp(delta) - delta - 1

    expected = per_position(k3, logp, logp_ref)
    close(got, expected)
    assert (got >= 0).all()
    g_logp, g_ref = grads(got.sum(), (logp, logp_ref))
    close(g_logp, 1 - torch.exp(logp_ref.detach() - logp.detach()))
    assert g_ref is None
    close(kl_to_ref(logp, logp.detach()), torch.zeros(B, T, dtype=F64))


def test_cross_entropy_is_negative_log_likelihood():
    z = randn(B, T, V, seed=43, grad=True)
    targets = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(44))
    logp = torch.log_softmax(z, -1).gather(-1, targets[..., None]).squeeze(-1)
    got = aggregate(cross_entropy(logp), torch.ones(B, T, dtype=torch.bool))
    expected = torch.nn.functional.cross_entropy(z.reshape(-1, V), targets.reshape(-1))
    close(got, expected)
    close(grads(got, z)[0], grads(expected, z)[0])


# ---------------------------------------------------------------- aggregate


@pytest.mark.parametrize("mode", ["token", "seq", "constant"])
@pytest.mark.parametrize("float_mask", [False, True])
def test_aggregate_matches_reference(mode, float_mask):
    loss = randn(B, T, seed=45, grad=True)
    mask = mask_bt()
    if float_mask:
        mask = mask * torch.tensor([1.0, 0.5, 2.0], dtype=F64)[:, None]
    constant = 4.0 * B if mode == "constant" else None
    got = aggregate(loss, mask, mode, constant)
    expected = ref_aggregate(loss, mask, mode, constant)
    close(got, expected)
    close(grads(got, loss)[0], grads(expected, loss)[0])


def test_aggregate_modes_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(loss, mask, "token").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "seq").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "constant", 6.0).item() == pytest.approx(10 / 6)


@pytest.mark.parametrize("mode", ["token", "seq", "constant"])
def test_aggregate_shares_of_row_splits_sum_to_the_whole(mode):
    loss = randn(B, T, seed=47, grad=True)
    mask = mask_bt()
    constant = 4.0 * B if mode == "constant" else None
    whole = aggregate(loss, mask, mode, constant)
    total = mask.sum().item() if mode == "token" else B
    parts = [slice(0, 1), slice(1, B)]
    shares = sum(aggregate(loss[rows], mask[rows], mode, constant, total=total) for rows in parts)
    close(shares, whole)
    close(grads(shares, loss)[0], grads(whole, loss)[0])


@pytest.mark.parametrize("mode", ["token", "seq", "constant"])
def test_aggregate_empty_mask_is_zero_not_nan(mode):
    loss = randn(B, T, seed=46, grad=True)
    padded = torch.where(torch.eye(B, T, dtype=torch.bool), torch.nan, loss)
    got = aggregate(padded, torch.zeros(B, T), mode, 10.0)
    assert got.item() == 0.0
    assert torch.equal(grads(got, loss)[0], torch.zeros(B, T, dtype=F64))
    assert masked_mean(loss, torch.zeros(B, T)).item() == 0.0


def test_aggregate_rejects_bad_mode_and_constant():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(torch.zeros(B, T), torch.ones(B, T), "sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="constant > 0"):
        aggregate(torch.zeros(B, T), torch.ones(B, T), "constant")


# ---------------------------------------------------------------- masking, end to end


def perturb_padding(x, mask, seed):
    """x with large random changes at padded positions ([B, T] mask broadcast over extra dims)."""
    pad = ~mask.view(*mask.shape, *([1] * (x.dim() - 2)))
    noise = randn(*x.shape, seed=seed, scale=50.0)
    return torch.where(pad, x.detach() + noise, x.detach()).requires_grad_(x.requires_grad)


def loss_cases():
    """name -> (per-token loss function, inputs; the first input is the student tensor)."""
    return {
        "clipped_pg": (
            lambda lp, old, a: clipped_pg(lp, old, a, 0.2, 0.28)[0],
            (randn(B, T, seed=48), randn(B, T, seed=49, scale=0.3), randn(B, T, seed=50)),
        ),
        "full": (
            lambda s, t: dense_reverse_kl(s, t, 0.7),
            (randn(B, T, V, seed=51), randn(B, T, V, seed=52)),
        ),
        "forward": (
            lambda s, t: dense_forward_kl(s, t, 0.7),
            (randn(B, T, V, seed=53), randn(B, T, V, seed=54)),
        ),
        "topk": (
            lambda s, t: reverse_kl_topk(torch.log_softmax(s / 0.7, -1)[..., :K], t),
            (randn(B, T, V, seed=55), torch.log_softmax(randn(B, T, V, seed=56), -1)[..., :K]),
        ),
        "sampled": (reverse_kl_sampled, (randn(B, T, seed=57), randn(B, T, seed=58))),
        "kl_to_ref": (kl_to_ref, (randn(B, T, seed=59), randn(B, T, seed=60))),
        "cross_entropy": (cross_entropy, (randn(B, T, seed=61),)),
    }


@pytest.mark.parametrize("case", list(loss_cases()))
@pytest.mark.parametrize("mode", ["token", "seq", "constant"])
def test_padding_changes_nothing(case, mode):
    fn, inputs = loss_cases()[case]
    mask = mask_bt()

    def loss_and_grad(tensors):
        student = tensors[0].detach().requires_grad_()
        loss = aggregate(fn(student, *tensors[1:]), mask, mode, 20.0)
        return loss, grads(loss, student)[0]

    loss, grad = loss_and_grad(inputs)
    perturbed = [perturb_padding(x, mask, seed=100 + i) for i, x in enumerate(inputs)]
    loss_p, grad_p = loss_and_grad(perturbed)
    close(loss_p, loss)
    close(grad_p, grad)
    pad = ~mask
    assert torch.equal(grad[pad], torch.zeros_like(grad[pad]))


@pytest.mark.parametrize("case", list(loss_cases()))
@pytest.mark.parametrize("mode", ["token", "seq", "constant"])
def test_empty_completion_row_is_finite_with_zero_gradient(case, mode):
    fn, inputs = loss_cases()[case]
    mask = mask_bt()
    mask[1] = False
    student = inputs[0].detach().requires_grad_()
    loss = aggregate(fn(student, *inputs[1:]), mask, mode, 20.0)
    grad = grads(loss, student)[0]
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    assert grad[0].abs().sum() > 0


# ---------------------------------------------------------------- combining terms, λ


def test_combine_advantage_level_matches_reference_and_is_constant():
    adv = randn(B, seed=62, grad=True)
    logp_old = randn(B, T, seed=63, grad=True)
    logp_teacher = randn(B, T, seed=64, grad=True)
    got = combine_advantage_level(adv, logp_old, logp_teacher, 0.5)
    expected = per_position(
        lambda a, lo, lt: a.detach() - 0.5 * (lo - lt).detach(),
        adv[:, None].expand(B, T),
        logp_old,
        logp_teacher,
    )
    close(got, expected)
    assert not got.requires_grad
    close(
        combine_advantage_level(adv, logp_old, logp_teacher, 0.0),
        adv.detach()[:, None].expand(B, T),
    )
    # feeding Â to clipped_pg still gives gradient to the student only
    logp = randn(B, T, seed=65, grad=True)
    per_token, _ = clipped_pg(logp, logp_old, got, 0.2, 0.2)
    assert grads(per_token.sum(), (logp, adv, logp_old, logp_teacher))[1:] == (None, None, None)


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("constant", 0, 0.5),
        ("constant", 99, 0.5),
        ("linear_decay", 0, 0.5),
        ("linear_decay", 50, 0.25),
        ("linear_decay", 100, 0.0),
        ("linear_decay", 150, 0.0),
        ("warmup", 0, 0.0),
        ("warmup", 5, 0.25),
        ("warmup", 10, 0.5),
        ("warmup", 80, 0.5),
    ],
)
def test_lambda_schedule(kind, step, expected):
    assert lambda_schedule(step, 100, 0.5, kind, warmup_steps=10) == pytest.approx(expected)


def test_lambda_schedule_edges():
    assert lambda_schedule(0, 100, 0.5, "warmup", warmup_steps=0) == 0.5
    with pytest.raises(ValueError, match="total_steps"):
        lambda_schedule(0, 0, 0.5, "linear_decay")
    with pytest.raises(ValueError, match="unknown λ schedule"):
        lambda_schedule(0, 10, 0.5, "cosine")  # type: ignore[arg-type]
