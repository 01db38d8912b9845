"""Chunked log-probs / KL and the shared-prompt group forward against naive references."""

import pytest
import torch
import transformers
from transformers.models.qwen3 import modeling_qwen3

from dgrpo.logprobs import (
    completion_logprobs,
    gathered_logits,
    group_forward,
    lm_head_weight,
    logprobs_and_kl,
    topk_logprobs,
)

pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated")

TAU = 0.7


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on a busy 2-core machine OpenMP threads fighting for the cores
    make each op ~100× slower than running on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_logprobs(hidden, weight, targets, temperature):
    logits = hidden.double() @ weight.double().T / temperature
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)


def naive_kl(h_s, w_s, h_t, w_t, temperature, reverse):
    logp_s = torch.log_softmax(h_s.double() @ w_s.double().T / temperature, -1)
    logp_t = torch.log_softmax(h_t.double() @ w_t[: w_s.shape[0]].double().T / temperature, -1)
    if reverse:
        return (logp_s.exp() * (logp_s - logp_t)).sum(-1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(-1)


def grads(value, tensors, weights):
    return torch.autograd.grad((value * weights).sum(), tensors)


@pytest.fixture
def head():
    gen = torch.Generator().manual_seed(0)
    n, h, v = 37, 16, 50
    hidden = torch.randn(n, h, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=gen)
    weights = torch.randn(n, generator=gen, dtype=torch.float64)  # a non-uniform upstream grad
    return hidden, weight, targets, weights


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 37, 100])
def test_logprobs_match_naive(head, chunk_size):
    hidden, weight, targets, weights = head
    logp = completion_logprobs(hidden, weight, targets, TAU, chunk_size)
    ref = naive_logprobs(hidden, weight, targets, TAU)
    torch.testing.assert_close(logp, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(
        grads(logp, (hidden, weight), weights), grads(ref, (hidden, weight), weights), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_logprobs_float32_leading_dims_and_entropy(head):
    hidden, weight, targets, _ = head
    h32 = hidden.detach().float()[:36].view(4, 9, -1).requires_grad_()
    w32 = weight.detach().float().requires_grad_()
    logp, entropy = completion_logprobs(h32, w32, targets[:36].view(4, 9), TAU, 7, with_entropy=True)
    ref = naive_logprobs(hidden[:36].view(4, 9, -1), weight, targets[:36].view(4, 9), TAU)
    assert logp.shape == (4, 9) and logp.dtype == torch.float32
    torch.testing.assert_close(logp.double(), ref, rtol=1e-5, atol=1e-5)
    p = torch.softmax(hidden[:36].view(4, 9, -1) @ weight.T / TAU, -1)
    torch.testing.assert_close(entropy.double(), -(p * p.log()).sum(-1), rtol=1e-5, atol=1e-5)
    assert not entropy.requires_grad
    logp.sum().backward()
    want = torch.autograd.grad(ref.sum(), (hidden, weight))
    torch.testing.assert_close(h32.grad.double(), want[0][:36].view(4, 9, -1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w32.grad.double(), want[1], rtol=1e-4, atol=1e-5)


def test_logprobs_bfloat16_head_gives_float32_logprobs(head):
    hidden, weight, targets, _ = head
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = weight.detach().bfloat16().requires_grad_()
    logp = completion_logprobs(h16, w16, targets, TAU, 8)
    assert logp.dtype == torch.float32
    ref = torch.log_softmax((h16 @ w16.T).float() / TAU, -1).gather(-1, targets[:, None])[:, 0]
    torch.testing.assert_close(logp, ref, rtol=1e-5, atol=1e-5)
    got, want = grads(logp, (h16, w16), 1.0), grads(ref, (h16, w16), 1.0)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == torch.bfloat16
        assert_close_to_scale(a.float(), b.float(), 2e-2, "bf16 grad")


def test_logprobs_frozen_weight_gets_no_grad(head):
    hidden, weight, targets, _ = head
    logp = completion_logprobs(hidden, weight.detach(), targets, TAU, 8)
    (g,) = torch.autograd.grad(logp.sum(), hidden)
    (want,) = torch.autograd.grad(naive_logprobs(hidden, weight.detach(), targets, TAU).sum(), hidden)
    torch.testing.assert_close(g, want)


@pytest.mark.parametrize("reverse", [True, False])
@pytest.mark.parametrize("chunk_size", [6, 64])
def test_kl_matches_naive_float64(reverse, chunk_size):
    gen = torch.Generator().manual_seed(1)
    n, h_s, h_t, v = 29, 12, 20, 40
    f64 = dict(generator=gen, dtype=torch.float64)
    h_student = torch.randn(n, h_s, **f64, requires_grad=True)
    w_student = torch.randn(v, h_s, **f64, requires_grad=True)
    # teacher: bigger hidden size, embedding padded past the shared vocabulary
    h_teacher = torch.randn(n, h_t, **f64, requires_grad=True)
    w_teacher = torch.randn(v + 6, h_t, **f64, requires_grad=True)
    weights = torch.randn(n, **f64)
    targets = torch.randint(0, v, (n,), generator=gen)

    def kl_fn(*args):  # the KL alone: its gradient must not need the log-probs' term
        return logprobs_and_kl(*args[:2], targets, *args[2:], kl="reverse" if reverse else "forward")[1]

    kl = kl_fn(h_student, w_student, h_teacher, w_teacher, TAU, chunk_size)
    ref = naive_kl(h_student, w_student, h_teacher, w_teacher, TAU, reverse)
    torch.testing.assert_close(kl, ref, rtol=1e-12, atol=1e-12)
    assert (kl >= -1e-12).all()
    student = (h_student, w_student)
    for got, want in zip(grads(kl, student, weights), grads(ref, student, weights), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)
    kl_fn(h_student, w_student, h_teacher, w_teacher, TAU, chunk_size).sum().backward()
    assert h_student.grad is not None
    assert h_teacher.grad is None and w_teacher.grad is None  # the teacher is a fixed target


@pytest.mark.parametrize("kl", ["reverse", "forward"])
def test_fused_logprobs_and_kl_match_separate_calls(head, kl):
    hidden, weight, targets, weights = head
    gen = torch.Generator().manual_seed(5)
    h_teacher = torch.randn(37, 24, generator=gen, dtype=torch.float64)
    w_teacher = torch.randn(50, 24, generator=gen, dtype=torch.float64)
    logp, kl_value = logprobs_and_kl(hidden, weight, targets, h_teacher, w_teacher, TAU, 6, kl=kl)
    ref_logp = naive_logprobs(hidden, weight, targets, TAU)
    ref_kl = naive_kl(hidden, weight, h_teacher, w_teacher, TAU, kl == "reverse")
    torch.testing.assert_close(logp, ref_logp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl_value, ref_kl, rtol=1e-12, atol=1e-12)
    loss, ref = logp * weights + kl_value, ref_logp * weights + ref_kl
    for got, want in zip(
        grads(loss, (hidden, weight), weights), grads(ref, (hidden, weight), weights), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


def test_fused_entropy_matches_completion_logprobs(head):
    hidden, weight, targets, _ = head
    h_teacher = torch.randn(37, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    logp, _, entropy = logprobs_and_kl(hidden, weight, targets, h_teacher, weight, TAU, 5, with_entropy=True)
    ref_logp, ref_entropy = completion_logprobs(hidden, weight, targets, TAU, 7, with_entropy=True)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entropy, ref_entropy, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_topk_logprobs_match_naive(head, chunk_size):
    hidden, weight, _, _ = head
    values, ids = topk_logprobs(hidden.view(37, 1, -1), weight, 6, TAU, chunk_size)
    ref = torch.log_softmax(hidden.double() @ weight.double().T / TAU, -1).topk(6, -1)
    assert values.shape == ids.shape == (37, 1, 6) and not values.requires_grad
    assert torch.equal(ids[:, 0], ref.indices)
    torch.testing.assert_close(values[:, 0], ref.values, rtol=1e-12, atol=1e-12)
    targets = torch.arange(37).view(37, 1) % weight.shape[0]
    *_, target_logp = topk_logprobs(hidden.view(37, 1, -1), weight, 6, TAU, chunk_size, targets=targets)
    want = completion_logprobs(hidden.view(37, 1, -1), weight, targets, TAU, chunk_size)
    torch.testing.assert_close(target_logp, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 6, 100])
def test_gathered_logits_match_einsum_with_repeated_ids(head, chunk_size):
    hidden, weight, _, _ = head
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (37, 5), generator=gen)
    ids[:, 1] = ids[:, 0]  # the same row of W twice at one position: gradients must add up
    upstream = torch.randn(37, 5, generator=gen, dtype=torch.float64)
    got = gathered_logits(hidden.view(37, 1, -1), weight, ids.view(37, 1, 5), chunk_size)
    want = torch.einsum("nh,nkh->nk", hidden, weight[ids])
    assert got.shape == (37, 1, 5)
    torch.testing.assert_close(got[:, 0], want, rtol=1e-12, atol=1e-12)
    got_grads = torch.autograd.grad((got[:, 0] * upstream).sum(), (hidden, weight))
    want_grads = torch.autograd.grad((want * upstream).sum(), (hidden, weight))
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_kl_is_zero_for_identical_models_and_rejects_small_teacher_vocab():
    gen = torch.Generator().manual_seed(2)
    h, w = torch.randn(10, 8, generator=gen), torch.randn(30, 8, generator=gen)
    targets = torch.zeros(10, dtype=torch.long)
    _, kl = logprobs_and_kl(h, w, targets, h, w, 1.0, 3)
    torch.testing.assert_close(kl, torch.zeros(10), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="vocabulary"):
        logprobs_and_kl(h, w, targets, h, w[:20], 1.0, 3)


# ---------------------------------------------------------------- group forward


def tiny_qwen3(vocab_size=1000, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
    )
    return transformers.Qwen3ForCausalLM(config).to(dtype)


@pytest.fixture
def float64_norms(monkeypatch):
    """Qwen3RMSNorm computes in float32 whatever the input dtype; that caps a float64 model at
    ~1e-7 agreement between any two batchings. A pure-float64 norm lets the float64 test check
    the shared-prompt path to ~1e-12."""

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_qwen3.Qwen3RMSNorm, "forward", forward)


def rollout(vocab_size, prompt_len=9, group=3, length=6, padded=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab_size, (1, prompt_len), generator=gen)
    completions = torch.randint(0, vocab_size, (group, length), generator=gen)
    mask = torch.ones(group, length, dtype=torch.long)
    if padded:
        mask[1, 4:] = 0
        mask[-1, 1:] = 0
    return prompt, completions, mask


def group_loss(model, prompt, completions, mask):
    """A scalar mixing every token's log-prob with distinct weights; padding excluded."""
    hidden = group_forward(model, prompt, completions, mask, with_grad=True)
    logp = completion_logprobs(hidden[mask.bool()], lm_head_weight(model), completions[mask.bool()], TAU, 4)
    return (logp * torch.linspace(0.5, 1.5, logp.numel(), dtype=logp.dtype)).sum(), hidden


def naive_group_loss(model, prompt, completions, mask):
    """G separate forwards of cat(prompt, completion_g) with full logits."""
    n_prompt, rows, logps = prompt.shape[1], [], []
    for ids, n in zip(completions, mask.sum(1).tolist(), strict=True):
        hidden = model.model(torch.cat([prompt[0], ids[:n]])[None]).last_hidden_state[0]
        rows.append(hidden[n_prompt - 1 : n_prompt + n - 1])
        logits = model(torch.cat([prompt[0], ids[:n]])[None]).logits[0, n_prompt - 1 : -1]
        logps.append(torch.log_softmax(logits / TAU, -1).gather(-1, ids[:n, None])[:, 0])
    logp = torch.cat(logps)
    return (logp * torch.linspace(0.5, 1.5, logp.numel(), dtype=logp.dtype)).sum(), rows


def loss_and_grads(loss_fn, model, *batch):
    model.zero_grad()
    loss, hidden = loss_fn(model, *batch)
    loss.backward()
    return loss.detach(), hidden, {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_close_to_scale(got, want, rtol, what=""):
    """max |got - want| <= rtol * max |want|: relative to the tensor's scale, not per entry
    (a float32 gradient entry near zero legitimately has a large relative error)."""
    err, scale = (got - want).abs().max().item(), want.abs().max().item()
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def assert_group_matches_naive(model, batch, rtol):
    loss, hidden, grad = loss_and_grads(group_loss, model, *batch)
    ref_loss, ref_rows, ref_grad = loss_and_grads(naive_group_loss, model, *batch)
    assert_close_to_scale(loss, ref_loss, rtol, "loss")
    for g, row in enumerate(ref_rows):
        assert_close_to_scale(hidden[g, : len(row)], row, rtol, f"hidden row {g}")
    for name in ref_grad:
        assert_close_to_scale(grad[name], ref_grad[name], rtol, name)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_group_forward_matches_g_fold_forward_float32(padded, checkpointing):
    model = tiny_qwen3()
    model.train()  # checkpointing is only active in training mode; Qwen3 has no dropout
    if checkpointing:
        model.gradient_checkpointing_enable()
    batch = rollout(1000, padded=padded)
    assert_group_matches_naive(model, batch, rtol=1e-5)


@pytest.mark.usefixtures("float64_norms")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_group_forward_matches_g_fold_forward_float64(checkpointing):
    model = tiny_qwen3(dtype=torch.float64).train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    assert_group_matches_naive(model, rollout(1000), rtol=1e-12)


def test_checkpointing_gives_same_loss_and_grads():
    batch = rollout(1000, seed=3)
    model = tiny_qwen3().train()
    loss, _, grad = loss_and_grads(group_loss, model, *batch)
    model.gradient_checkpointing_enable()
    loss_ckpt, _, grad_ckpt = loss_and_grads(group_loss, model, *batch)
    assert_close_to_scale(loss_ckpt, loss, 1e-6, "loss")
    for name in grad:
        assert_close_to_scale(grad_ckpt[name], grad[name], 1e-6, name)


def test_reentrant_checkpointing_is_rejected():
    model = tiny_qwen3().train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    with pytest.raises(ValueError, match="non-reentrant"):
        group_forward(model, *rollout(1000), with_grad=True)


def test_group_forward_without_grad_and_single_token_completions():
    model = tiny_qwen3().eval()
    prompt, completions, mask = rollout(1000, length=1, padded=False)
    hidden = group_forward(model, prompt, completions, mask, with_grad=False)
    assert hidden.shape == (3, 1, 64) and not hidden.requires_grad
    with torch.no_grad():
        last = model.model(prompt).last_hidden_state[:, -1]
    torch.testing.assert_close(hidden[:, 0], last.expand(3, -1))


def test_group_forward_rejects_left_padding():
    prompt, completions, mask = rollout(1000)
    with pytest.raises(ValueError, match="right-padded"):
        group_forward(tiny_qwen3(), prompt, completions, mask.flip(1), with_grad=False)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 5e-5), (torch.float64, 1e-10)])
def test_full_vocab_qwen3_head(dtype, rtol, request):
    """V=151,936 (the Qwen3 vocabulary), short sequences: group forward + logprobs + reverse KL
    against full-logit forwards. In float32 the gradient error of either path, amplified
    through the randomly initialised model, is ~1e-5 of the scale; float64 pins it down."""
    if dtype == torch.float64:
        request.getfixturevalue("float64_norms")
    model = tiny_qwen3(vocab_size=151936, dtype=dtype)
    teacher = tiny_qwen3(vocab_size=151936, dtype=dtype, seed=1).eval()
    prompt, completions, mask = rollout(151936, prompt_len=5, group=2, length=4)
    keep = mask.bool()
    hidden = group_forward(model, prompt, completions, mask, with_grad=True)
    with torch.no_grad():
        h_teacher = group_forward(teacher, prompt, completions, mask, with_grad=False)
    w_s, w_t = lm_head_weight(model), lm_head_weight(teacher)
    logp, kl = logprobs_and_kl(hidden[keep], w_s, completions[keep], h_teacher[keep], w_t, TAU, 3)
    (logp.sum() + kl.sum()).backward()
    grad = w_s.grad.clone()
    model.zero_grad()

    rows = [torch.cat([prompt[0], ids[:n]]) for ids, n in zip(completions, mask.sum(1).tolist(), strict=True)]
    logits = torch.cat([model(r[None]).logits[0, 4:-1] for r in rows]).double() / TAU
    with torch.no_grad():
        logits_t = torch.cat([teacher(r[None]).logits[0, 4:-1] for r in rows]).double() / TAU
    ref_logp = torch.log_softmax(logits, -1).gather(-1, completions[keep][:, None])[:, 0]
    logp_s, logp_t = torch.log_softmax(logits, -1), torch.log_softmax(logits_t, -1)
    ref_kl = (logp_s.exp() * (logp_s - logp_t)).sum(-1)
    (ref_logp.sum() + ref_kl.sum()).backward()
    assert_close_to_scale(logp.double(), ref_logp, rtol, "logp")
    assert_close_to_scale(kl.double(), ref_kl, rtol * 10, "reverse KL")  # KL ≪ its terms
    assert_close_to_scale(grad, w_s.grad, rtol, "embedding / lm_head grad")
