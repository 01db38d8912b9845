"""Shared-prefix attention equals attention over G concatenated copies of the prompt."""

from types import SimpleNamespace

import pytest
import torch

import dgrpo.attention as attention
from dgrpo.attention import prefix_attention
from dgrpo.logprobs import group_forward
from dgrpo.models import build_tiny


def naive_attention(q, k_prompt, v_prompt, k_own, v_own, scale):
    """softmax over cat(prompt repeated G times, own keys), causal on the own keys when C > 1."""
    rows, heads, n_query = q.shape[:3]
    rep = heads // k_prompt.shape[1]
    keys = torch.cat([k_prompt.expand(rows, -1, -1, -1), k_own], 2).repeat_interleave(rep, 1)
    values = torch.cat([v_prompt.expand(rows, -1, -1, -1), v_own], 2).repeat_interleave(rep, 1)
    scores = q @ keys.transpose(-1, -2) * scale
    if n_query > 1:
        n_prompt = k_prompt.shape[2]
        future = torch.arange(k_own.shape[2])[None] > torch.arange(n_query)[:, None]
        scores[..., n_prompt:] = scores[..., n_prompt:].masked_fill(future, float("-inf"))
    return scores.softmax(-1) @ values


def inputs(dtype, n_query, n_own, rows=3, heads=4, kv_heads=2, n_prompt=9, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [
        (rows, heads, n_query, dim),
        (1, kv_heads, n_prompt, dim),
        (1, kv_heads, n_prompt, dim),
        (rows, kv_heads, n_own, dim),
        (rows, kv_heads, n_own, dim),
    ]
    return [torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_() for shape in shapes]


def values_and_grads(fn, tensors, weight):
    out = fn(*tensors, 0.35)
    return out, torch.autograd.grad((out * weight).sum(), tensors)


@pytest.fixture(params=["fused", "reference"])
def kernel(request, monkeypatch):
    """The CPU flash kernel, or the plain-torch kernel used on other devices (small key chunks)."""
    if request.param == "reference":
        monkeypatch.setattr(attention, "_KEY_CHUNK", 4)
        monkeypatch.setattr(attention, "_kernel", lambda q: "reference")
    return request.param


@pytest.mark.parametrize("n_query,n_own", [(6, 6), (1, 5), (1, 1)], ids=["train", "decode", "first"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_prefix_attention_matches_concatenated_prompt(kernel, n_query, n_own, dtype, tol):
    tensors = inputs(dtype, n_query, n_own)
    weight = torch.randn(tensors[0].shape, dtype=dtype)
    got, got_grads = values_and_grads(prefix_attention, tensors, weight)
    want, want_grads = values_and_grads(naive_attention, tensors, weight)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    names = ["q", "k_prompt", "v_prompt", "k_own", "v_own"]
    for name, g, w in zip(names, got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


def test_prefix_attention_bfloat16_is_close_to_float64():
    tensors = inputs(torch.float64, 6, 6, heads=2, kv_heads=2)
    want = naive_attention(*tensors, 0.35)
    got = prefix_attention(*[t.detach().bfloat16() for t in tensors], 0.35)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want.detach(), rtol=0.05, atol=0.02)


def test_prompt_kv_is_never_repeated(monkeypatch):
    """Every attention block sees the prompt K/V with batch size 1 (no G-fold copy)."""
    seen = []
    block = attention._block_forward

    def spy(q, k, v, causal, scale):
        seen.append(k.shape)
        return block(q, k, v, causal, scale)

    monkeypatch.setattr(attention, "_block_forward", spy)
    tensors = inputs(torch.float32, 4, 4, rows=5, n_prompt=11)
    prefix_attention(*tensors, 0.35)
    assert seen[0] == (1, 2, 11, 8) and seen[1] == (5, 4, 4, 8)


def test_prefix_attention_rejects_batched_prompt_and_misaligned_queries():
    q, k_prompt, v_prompt, k_own, v_own = inputs(torch.float32, 4, 4)
    with pytest.raises(ValueError, match="batch size 1"):
        prefix_attention(q, k_prompt.expand(3, -1, -1, -1), v_prompt, k_own, v_own, 0.3)
    with pytest.raises(ValueError, match="own keys"):
        prefix_attention(q, k_prompt, v_prompt, k_own[:, :, :3], v_own[:, :, :3], 0.3)


def _like(device: str, dtype: torch.dtype, head_dim: int = 128):
    """What `_kernel` reads of a query tensor (a CUDA one cannot be built without a GPU)."""
    return SimpleNamespace(device=torch.device(device), dtype=dtype, shape=(1, 8, 64, head_dim))


def test_kernel_choice_never_materialises_scores_on_cpu_or_cuda():
    """CPU: the fused flash kernel for every dtype; CUDA: flash for the autocast dtypes (head
    dims it supports), the memory-efficient kernel for float32; the chunked reference only for
    float64 on CUDA and other devices."""
    assert attention._kernel(_like("cpu", torch.float32)) == "cpu_flash"
    assert attention._kernel(_like("cpu", torch.bfloat16)) == "cpu_flash"
    assert attention._kernel(_like("cuda", torch.bfloat16)) == "flash"
    assert attention._kernel(_like("cuda", torch.float16, head_dim=64)) == "flash"
    assert attention._kernel(_like("cuda", torch.bfloat16, head_dim=512)) == "efficient"
    assert attention._kernel(_like("cuda", torch.float32)) == "efficient"
    assert attention._kernel(_like("cuda", torch.float64)) == "reference"
    assert attention._kernel(_like("mps", torch.float32)) == "reference"


def test_training_forward_under_bf16_autocast_runs_in_bf16_and_is_close():
    """Under autocast Qwen3's q/k reach attention in float32 and v in bfloat16: the kernel runs
    in the autocast dtype (as SDPA would), values and gradients close to float32."""
    model = build_tiny("tiny-qwen3", 0)
    prompt, completions = torch.randint(0, 1000, (1, 30)), torch.randint(0, 1000, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    results = []
    for enabled in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            hidden = group_forward(model, prompt, completions, mask, with_grad=True)
        hidden.float().square().mean().backward()
        results.append((hidden.float(), model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    (hidden, grad), (hidden_bf16, grad_bf16) = results
    torch.testing.assert_close(hidden_bf16, hidden, rtol=0.05, atol=0.05)
    assert torch.nn.functional.cosine_similarity(grad.flatten(), grad_bf16.flatten(), dim=0) > 0.99


def test_prompt_pass_runs_causal_sdpa_without_a_mask(monkeypatch):
    """The prompt pass goes to SDPA with is_causal and no [P, P] mask, so SDPA can pick its
    fused kernels (flash / memory-efficient on CUDA) that never hold the scores."""
    import transformers.integrations.sdpa_attention as sdpa

    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        calls.append((attn_mask, is_causal, q.shape[-2]))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(sdpa.torch.nn.functional, "scaled_dot_product_attention", spy)
    model = build_tiny("tiny-qwen3", 0)
    group_forward(model, torch.randint(0, 1000, (1, 40)), torch.randint(0, 1000, (2, 3)),
                  torch.ones(2, 3, dtype=torch.bool), with_grad=False)  # fmt: skip
    assert calls == [(None, True, 40)] * model.config.num_hidden_layers  # the completions: prefix_attention
