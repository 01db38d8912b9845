"""Attention of G completion rows over ONE shared prompt: the prompt's K/V are never repeated.

A group's G completions all attend to the same prompt K/V [1, kv_heads, P, d]. Repeating it
G times (what `generate(input_ids=prompt.expand(G, -1))` or a concatenated cache does) costs
G × P memory per layer and G × P of memory traffic per decoding step. Here attention is split
in two blocks and merged by their log-sum-exp (the identity behind flash and ring attention):

    prompt block: the G·rep·C queries of a kv head folded into ONE batch row, non-causal
                  against the prompt K/V as stored ([1, kv_heads, P, d], no copy);
    own block:    each row's queries against its own completion K/V (causal in training,
                  all of them when decoding one token);
    merged:       out = Σ_b exp(lse_b − lse) · out_b,  lse = logaddexp(lse_prompt, lse_own).

The backward calls each block's attention backward with the MERGED out and lse, which gives
that block's exact share of the gradient; the prompt block's key/value gradients are already
summed over the G rows. Both blocks run fused kernels that return the log-sum-exp and never
hold a [queries × keys] score matrix (`_kernel`): PyTorch's flash kernel on CPU; on CUDA the
flash kernel (fp16/bf16, the autocast dtype) or the memory-efficient one (float32). A
key-chunked reference in plain torch (tested against the fused kernels) does the same math
elsewhere (float64, other devices).

Use: `use_shared_prefix_attention(model)`, then `model.model(input_ids=..., position_ids=...,
shared_prefix=[(k, v) per layer])` — the registered attention function reads the layer's
prompt K/V from the `shared_prefix` keyword, which transformers passes down to attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "dgrpo_shared_prefix"
_KEY_CHUNK = 4096  # keys per block of the plain-torch kernel: [queries × 4096] scores at a time


# --------------------------------------------------------------------------------------------
# One attention block with its log-sum-exp: (out, lse) and the backward from a merged (out, lse)
# --------------------------------------------------------------------------------------------


def _kernel(q: torch.Tensor) -> str:
    """The fused kernel for queries like `q`: cpu_flash, flash, efficient, or the reference."""
    if q.device.type == "cpu":
        return "cpu_flash"
    if q.device.type == "cuda" and q.dtype != torch.float64:
        half = q.dtype in (torch.float16, torch.bfloat16)
        return "flash" if half and q.shape[-1] <= 256 and q.shape[-1] % 8 == 0 else "efficient"
    return "reference"


def _block_forward(q, k, v, causal: bool, scale: float):
    """(softmax(q kᵀ · scale [+ causal]) v, its per-query log-sum-exp in `_acc(q)`, what the
    kernel's backward needs besides). `causal` is only asked for square blocks (a row's own
    keys), where every kernel's diagonal is the same."""
    kernel = _kernel(q)
    if kernel == "cpu_flash":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, scale=scale
        )
        return out, lse.to(_acc(q)), None
    if kernel == "flash":  # aux: cum_seq_q, cum_seq_k, max_q, max_k, rng_state, unused
        out, lse, *aux = torch.ops.aten._scaled_dot_product_flash_attention(
            q, k, v, 0.0, causal, False, scale=scale
        )
        return out, lse.to(_acc(q)), tuple(aux[:6])
    if kernel == "efficient":  # the log-sum-exp comes padded to a multiple of 32 queries
        out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, None, True, 0.0, causal, scale=scale
        )
        return out, lse[..., : q.shape[-2]].to(_acc(q)), (seed, offset, lse.shape[-1])
    out, lse = _reference_forward(q, k, v, causal, scale)
    return out, lse, None


def _block_backward(dout, q, k, v, out, lse, causal: bool, scale: float, aux):
    """(dq, dk, dv) of this block's share, given the merged out and lse of all blocks and the
    block's own `aux` from `_block_forward` (no dropout: its RNG state is passed, not read)."""
    kernel = _kernel(q)
    if kernel == "cpu_flash":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout, q, k, v, out, lse, 0.0, causal, scale=scale
        )
    if kernel == "flash":
        cum_q, cum_k, max_q, max_k, rng_state, unused = aux
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            dout, q, k, v, out, lse.float().contiguous(), cum_q, cum_k, max_q, max_k, 0.0, causal,
            rng_state, unused, scale=scale,
        )  # fmt: skip
    if kernel == "efficient":
        seed, offset, width = aux
        lse = F.pad(lse.float(), (0, width - lse.shape[-1])).contiguous()
        return torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            dout, q, k, v, None, out, lse, seed, offset, 0.0, [True, True, True, False], causal, scale=scale
        )[:3]
    return _reference_backward(dout, q, k, v, out, lse, causal, scale)


def _acc(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: float32, or float64 for float64 inputs."""
    return torch.promote_types(torch.float32, x.dtype)


def _scores(q, k_chunk, start: int, causal: bool, scale: float) -> torch.Tensor:
    """Scores of all queries against keys start.., -inf above the (top-left) diagonal."""
    s = torch.matmul(q.to(_acc(q)), k_chunk.to(_acc(q)).transpose(-1, -2)) * scale
    if causal:
        rows = torch.arange(q.shape[-2], device=q.device)[:, None]
        cols = torch.arange(start, start + k_chunk.shape[-2], device=q.device)[None]
        s = s.masked_fill(cols > rows, float("-inf"))
    return s


def _reference_forward(q, k, v, causal: bool, scale: float):
    """Online softmax over key chunks: never more than [queries × _KEY_CHUNK] scores."""
    top = q.new_full(q.shape[:-1], float("-inf"), dtype=_acc(q))
    total = torch.zeros_like(top)
    acc = q.new_zeros(q.shape, dtype=_acc(q))
    for start in range(0, k.shape[-2], _KEY_CHUNK):
        span = slice(start, start + _KEY_CHUNK)
        s = _scores(q, k[..., span, :], start, causal, scale)
        new_top = torch.maximum(top, s.amax(-1))
        safe = new_top.masked_fill(new_top == float("-inf"), 0.0)  # rows with no key yet
        decay = torch.exp(top - safe)
        p = torch.exp(s - safe[..., None])
        total = total * decay + p.sum(-1)
        acc = acc * decay[..., None] + torch.matmul(p, v[..., span, :].to(p.dtype))
        top = new_top
    lse = top + total.log()
    return (acc / total[..., None]).to(q.dtype), lse


def _reference_backward(dout, q, k, v, out, lse, causal: bool, scale: float):
    """FlashAttention-2's backward per key chunk: dS = P ∘ (dO vᵀ − rowsum(dO ∘ O))."""
    acc = _acc(q)
    dout32 = dout.to(acc)
    delta = (dout32 * out.to(acc)).sum(-1, keepdim=True)
    dq = torch.zeros_like(q, dtype=acc)
    dk, dv = torch.empty_like(k, dtype=acc), torch.empty_like(v, dtype=acc)
    for start in range(0, k.shape[-2], _KEY_CHUNK):
        span = slice(start, start + _KEY_CHUNK)
        p = torch.exp(_scores(q, k[..., span, :], start, causal, scale) - lse[..., None])
        dv[..., span, :] = torch.matmul(p.transpose(-1, -2), dout32)
        ds = p * (torch.matmul(dout32, v[..., span, :].to(acc).transpose(-1, -2)) - delta) * scale
        dq += torch.matmul(ds, k[..., span, :].to(acc))
        dk[..., span, :] = torch.matmul(ds.transpose(-1, -2), q.to(acc))
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# --------------------------------------------------------------------------------------------
# Prompt block + own block, merged
# --------------------------------------------------------------------------------------------


def _fold(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[G, kv·rep, C, …] → [1, kv, G·rep·C, …]: every query of a kv head in one batch row."""
    g, heads, c = x.shape[:3]
    x = x.reshape(g, kv_heads, heads // kv_heads, c, *x.shape[3:]).transpose(0, 1)
    return x.reshape(1, kv_heads, g * (heads // kv_heads) * c, *x.shape[4:])


def _unfold(x: torch.Tensor, rows: int, heads: int) -> torch.Tensor:
    """Inverse of `_fold` for a [G, heads, C, …] layout."""
    kv_heads = x.shape[1]
    c = x.shape[2] // (rows * (heads // kv_heads))
    x = x.reshape(kv_heads, rows, heads // kv_heads, c, *x.shape[3:]).transpose(0, 1)
    return x.reshape(rows, heads, c, *x.shape[4:])


def _repeat_heads(x: torch.Tensor, rep: int) -> torch.Tensor:
    """[G, kv, S, d] → [G, kv·rep, S, d] (grouped-query attention; the completion block only)."""
    return x if rep == 1 else x.repeat_interleave(rep, dim=1)


class _PrefixAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k_prompt, v_prompt, k_own, v_own, scale):
        rows, heads, n_query = q.shape[:3]
        kv_heads = k_prompt.shape[1]
        rep = heads // kv_heads
        causal = n_query > 1
        if causal and k_own.shape[2] != n_query:
            raise ValueError("several queries need exactly their own keys (training forward)")
        out_p, lse_p, aux_p = _block_forward(_fold(q, kv_heads), k_prompt, v_prompt, False, scale)
        out_p, lse_p = _unfold(out_p, rows, heads), _unfold(lse_p, rows, heads)
        k_rep, v_rep = _repeat_heads(k_own, rep), _repeat_heads(v_own, rep)
        out_o, lse_o, aux_o = _block_forward(q, k_rep, v_rep, causal, scale)
        lse = torch.logaddexp(lse_p, lse_o)
        out = torch.exp(lse_p - lse)[..., None] * out_p + torch.exp(lse_o - lse)[..., None] * out_o
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k_prompt, v_prompt, k_own, v_own, out, lse)
        ctx.scale, ctx.causal, ctx.aux = scale, causal, (aux_p, aux_o)
        return out

    @staticmethod
    def backward(ctx, dout):
        with torch.autocast(dout.device.type, enabled=False):
            return _PrefixAttention._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        q, k_prompt, v_prompt, k_own, v_own, out, lse = ctx.saved_tensors
        rows, heads = q.shape[:2]
        kv_heads = k_prompt.shape[1]
        rep = heads // kv_heads
        dout = dout.contiguous()
        fold = (_fold(dout, kv_heads), _fold(q, kv_heads), k_prompt, v_prompt)
        aux_p, aux_o = ctx.aux
        dq_p, dk_p, dv_p = _block_backward(
            *fold, _fold(out, kv_heads), _fold(lse, kv_heads), False, ctx.scale, aux_p
        )
        k_rep, v_rep = _repeat_heads(k_own, rep), _repeat_heads(v_own, rep)
        dq_o, dk_o, dv_o = _block_backward(dout, q, k_rep, v_rep, out, lse, ctx.causal, ctx.scale, aux_o)
        if rep > 1:  # each kv head served rep query heads
            dk_o = dk_o.reshape(rows, kv_heads, rep, *dk_o.shape[2:]).sum(2)
            dv_o = dv_o.reshape(rows, kv_heads, rep, *dv_o.shape[2:]).sum(2)
        return _unfold(dq_p, rows, heads) + dq_o, dk_p, dv_p, dk_o, dv_o, None


def prefix_attention(q, k_prompt, v_prompt, k_own, v_own, scale: float) -> torch.Tensor:
    """Attention of q [G, heads, C, d] over the shared prompt and each row's own keys.

    Equals `softmax(q · cat(k_prompt.expand(G), k_own)ᵀ · scale + mask) · cat(v…)` where query c
    sees the whole prompt and own keys 0..c (C > 1, training), or all own keys (C = 1, decoding
    after own keys 0..t−1 were cached). Grouped-query heads: heads = kv_heads · rep.

    Args:
        q: [G, heads, C, d] queries of the completion tokens (rotary already applied).
        k_prompt, v_prompt: [1, kv_heads, P, d] the prompt's K/V, shared by all G rows.
        k_own, v_own: [G, kv_heads, S, d] the completion tokens' K/V (S = C, or S ≥ 1 when C = 1).
    """
    if k_prompt.shape[0] != 1:
        raise ValueError(f"the prompt K/V must have batch size 1, got {k_prompt.shape[0]}")
    tensors = (q, k_prompt, v_prompt, k_own, v_own)
    dtype = _compute_dtype(tensors)
    # the kernels take one dtype, and autocast does not reach inside a custom Function
    with torch.autocast(q.device.type, enabled=False):
        return _PrefixAttention.apply(*(t.to(dtype) for t in tensors), scale)


def _compute_dtype(tensors) -> torch.dtype:
    """What SDPA would compute in: the autocast dtype when autocast is on (under autocast,
    Qwen3's normed and rotated q/k come out float32 while v is bfloat16), else the inputs'
    promoted dtype."""
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


# --------------------------------------------------------------------------------------------
# transformers integration
# --------------------------------------------------------------------------------------------


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The transformers attention interface. With `shared_prefix`, key/value are the completion
    tokens' own K/V and the layer's prompt K/V come from the keyword; without it, plain SDPA."""
    prefix = kwargs.pop("shared_prefix", None)
    if prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    if kwargs.get("sliding_window") is not None:
        raise ValueError("shared-prefix attention does not support sliding-window layers")
    if dropout:
        raise ValueError("shared-prefix attention runs without attention dropout")
    k_prompt, v_prompt = prefix[module.layer_idx]
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    out = prefix_attention(query, k_prompt, v_prompt, key, value, scale)
    return out.transpose(1, 2).contiguous(), None  # [G, C, heads, d] like every interface


AttentionInterface.register(ATTENTION_NAME, _attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # the SDPA path's masks


def use_shared_prefix_attention(model: torch.nn.Module) -> None:
    """Route the model's attention through `_attention` (idempotent; not saved with the model).

    Set once, not per call: a gradient-checkpoint replay during backward must run the same
    attention as the forward did. Forwards that pass `shared_prefix=[(k, v) for each layer]`
    get `prefix_attention` (no attention mask: masking is by position, so completions must be
    right-padded and padded outputs ignored); all others run transformers' SDPA path unchanged.
    """
    if model.config._attn_implementation != ATTENTION_NAME:
        model.config._attn_implementation = ATTENTION_NAME
