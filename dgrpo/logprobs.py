"""Completion-only log-probs and KL terms from hidden states, and the shared-prompt group forward.

Long context is the point (docs/architecture.md): nothing here builds [tokens × vocab] logits for a whole
sequence. The model returns final-norm hidden states at completion positions only; log-probs
and KL terms apply the lm_head to `chunk_size` positions at a time inside one custom autograd
function whose backward recomputes each chunk's logits, so forward and backward hold three
[chunk_size, V] buffers (reused across chunks) plus the gradients. The lm_head is assumed to be
a plain bias-free linear layer (Qwen3/Llama-style; no logit soft-capping).

Alignment: the hidden state that predicts completion token c_0 is the output at the LAST
PROMPT position, so for a prompt of length P the returned hidden states are the outputs at
positions P-1 .. P+C-2 and line up one-to-one with the completion tokens (the targets).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from dgrpo.attention import use_shared_prefix_attention

# --------------------------------------------------------------------------------------------
# Chunked log-probs and KL
# --------------------------------------------------------------------------------------------


def _logits_into(out: torch.Tensor, h: torch.Tensor, w: torch.Tensor, temperature: float):
    """out[:c] = h wᵀ / τ ([c, H] × [V, H] → [c, V]); the matmul runs in the weight's dtype."""
    out = out[: h.shape[0]]
    if out.dtype == w.dtype:
        torch.matmul(h.to(w.dtype), w.T, out=out)
    else:  # half-precision head: float32 logits from a half-precision matmul
        out.copy_(h.to(w.dtype) @ w.T)
    return out.div_(temperature) if temperature != 1.0 else out


def _logsumexp(z: torch.Tensor, scratch: torch.Tensor):
    """(logsumexp(z, -1), Σ exp(z − max)) leaving exp(z − max) in scratch, z untouched."""
    top = z.amax(-1, keepdim=True)
    total = torch.sub(z, top, out=scratch[: z.shape[0]]).exp_().sum(-1)
    return top.squeeze(-1) + total.log(), total


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_v a[:, v] b[:, v] without a [c, V] temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _ChunkedHead(torch.autograd.Function):
    """logp [N], KL [N] and entropy [N] from student (and teacher) hidden states, chunked.

    Each output is computed only when asked for (targets / h_t / with_entropy); gradients flow
    to h_s and w_s only. Buffers: A = student logits, B = teacher logits, S = exp scratch.
    """

    @staticmethod
    def forward(ctx, h_s, w_s, targets, h_t, w_t, temperature, chunk_size, kl_kind, with_entropy):
        dtype = torch.promote_types(torch.float32, torch.result_type(h_s, w_s))
        n, vocab = h_s.shape[0], w_s.shape[0]
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        logp, kl, entropy, lse_s, lse_t = (h_s.new_zeros(n, dtype=dtype) for _ in range(5))
        size = (min(chunk_size, n), vocab)
        buf_a, buf_s = h_s.new_empty(size, dtype=dtype), h_s.new_empty(size, dtype=dtype)
        buf_b = h_s.new_empty(size, dtype=dtype) if h_t is not None else None
        for i in range(0, n, chunk_size):
            span = slice(i, min(i + chunk_size, n))
            if h_t is not None:  # teacher first: its scratch use must not clobber exp(z_s)
                z_t = _logits_into(buf_b, h_t[span], w_t, temperature)
                lse_t[span] = _logsumexp(z_t, buf_s)[0]
            z_s = _logits_into(buf_a, h_s[span], w_s, temperature)
            lse_s[span], total = _logsumexp(z_s, buf_s)  # buf_s = p_s · total
            exp_s = buf_s[: z_s.shape[0]]
            if targets is not None:
                logp[span] = z_s.gather(1, targets[span, None]).squeeze(1) - lse_s[span]
            if with_entropy:  # H = lse − Σ_v p_v z_v
                entropy[span] = lse_s[span] - _rowdot(exp_s, z_s) / total
            if h_t is not None:  # z_s becomes r = log p_s − log p_t
                z_s.sub_(z_t).sub_((lse_s[span] - lse_t[span])[:, None])
                if kl_kind == "reverse":  # Σ p_s r
                    kl[span] = _rowdot(exp_s, z_s) / total
                else:  # Σ p_t (−r)
                    kl[span] = -_rowdot(z_t.sub_(lse_t[span, None]).exp_(), z_s)
        ctx.save_for_backward(h_s, w_s, targets, h_t, w_t, lse_s, lse_t, kl)
        ctx.temperature, ctx.chunk_size, ctx.kl_kind = temperature, chunk_size, kl_kind
        ctx.mark_non_differentiable(entropy)
        return logp, kl, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_kl, _grad_entropy):
        h_s, w_s, targets, h_t, w_t, lse_s, lse_t, kl = ctx.saved_tensors
        tau, chunk_size, dtype = ctx.temperature, ctx.chunk_size, lse_s.dtype
        n, vocab = h_s.shape[0], w_s.shape[0]
        size = (min(chunk_size, n), vocab)
        buf_a, buf_p = h_s.new_empty(size, dtype=dtype), h_s.new_empty(size, dtype=dtype)
        buf_b = h_s.new_empty(size, dtype=dtype) if h_t is not None else None
        need_h, need_w = ctx.needs_input_grad[:2]
        grad_h = torch.empty_like(h_s) if need_h else None
        grad_w = torch.zeros_like(w_s, dtype=dtype) if need_w else None
        for i in range(0, n, chunk_size):
            span = slice(i, min(i + chunk_size, n))
            z_s = _logits_into(buf_a, h_s[span], w_s, tau)
            p_s = torch.sub(z_s, lse_s[span, None], out=buf_p[: z_s.shape[0]]).exp_()
            dz = z_s  # dL/dz_s is built in place in the student-logits buffer
            if h_t is not None:
                g = grad_kl[span, None].to(dtype)
                z_t = _logits_into(buf_b, h_t[span], w_t, tau)
                if ctx.kl_kind == "reverse":  # dKL/dz_s = p_s ⊙ (r − KL)
                    shift = lse_s[span] - lse_t[span] + kl[span]
                    dz.sub_(z_t).sub_(shift[:, None]).mul_(p_s).mul_(g)
                else:  # dKL/dz_s = p_s − p_t
                    dz.copy_(p_s).sub_(z_t.sub_(lse_t[span, None]).exp_()).mul_(g)
            if targets is not None:  # dlogp/dz_s = onehot(target) − p_s
                g = grad_logp[span, None].to(dtype)
                if h_t is None:
                    torch.mul(p_s, -g, out=dz)
                else:
                    dz.addcmul_(p_s, g, value=-1.0)
                dz.scatter_add_(1, targets[span, None], g)
            if need_h:
                grad_h[span] = (dz.to(w_s.dtype) @ w_s).div_(tau)
            if need_w:
                grad_w.addmm_(dz.T, h_s[span].to(dtype), alpha=1.0 / tau)
        grad_w = grad_w.to(w_s.dtype) if need_w else None
        return grad_h, grad_w, None, None, None, None, None, None, None


def _head(h_s, w_s, targets, h_t, w_t, temperature, chunk_size, kl_kind, with_entropy=False):
    """Flatten leading dims, check and detach the teacher, run `_ChunkedHead`, restore shapes."""
    lead = h_s.shape[:-1]
    if h_t is not None:
        if kl_kind not in ("reverse", "forward"):
            raise ValueError(f"kl must be 'reverse' or 'forward', got {kl_kind!r}")
        vocab = w_s.shape[0]
        if w_t.shape[0] < vocab:
            raise ValueError(f"teacher vocabulary ({w_t.shape[0]}) is smaller than the student's ({vocab})")
        if h_t.shape[:-1] != lead:
            raise ValueError(f"student and teacher positions differ: {lead} vs {h_t.shape[:-1]}")
        # stop-gradient: the teacher is a fixed target; no gradient reaches its hidden states
        h_t = h_t.detach().reshape(-1, h_t.shape[-1])
        # stop-gradient on the teacher head; rows past the student's V are embedding padding
        w_t = w_t.detach()[:vocab]
    if targets is not None:
        targets = targets.reshape(-1)
    h_s = h_s.reshape(-1, h_s.shape[-1])
    outputs = _ChunkedHead.apply(h_s, w_s, targets, h_t, w_t, temperature, chunk_size, kl_kind, with_entropy)
    return [out.view(lead) for out in outputs]


def completion_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 128,
    *,
    with_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each target token under softmax(h Wᵀ / τ), chunked over positions.

    Must equal the naive
    `torch.log_softmax(hidden @ W.T / τ, -1).gather(-1, targets[..., None]).squeeze(-1)`
    in value and in gradient w.r.t. `hidden` and `lm_head_weight`, while holding only a few
    [chunk_size, V] buffers in forward and backward (backward recomputes each chunk's logits;
    d logp / dz = onehot(target) − softmax(z)).

    Args:
        hidden: [..., H] final-norm hidden states at completion positions only (see the module
            docstring for the alignment with targets).
        lm_head_weight: [V, H] output embedding (`lm_head_weight(model)`).
        targets: [...] token ids, the same leading shape as `hidden`.
        temperature: τ, the same one used for sampling and for the teacher.
        chunk_size: positions per chunk; extra memory ≈ 2 × chunk_size × V floats (3 with KL).
        with_entropy: also return the entropy of softmax(h Wᵀ / τ) per position, detached
            (a diagnostic: it carries no gradient).

    Returns:
        logp [...] in float32 (float64 for float64 inputs); with `with_entropy`, (logp, entropy).
    """
    logp, _, entropy = _head(
        hidden, lm_head_weight, targets, None, None, temperature, chunk_size, None, with_entropy
    )
    return (logp, entropy) if with_entropy else logp


def logprobs_and_kl(
    h_student: torch.Tensor,
    w_student: torch.Tensor,
    targets: torch.Tensor,
    h_teacher: torch.Tensor,
    w_teacher: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 128,
    *,
    kl: Literal["reverse", "forward"] = "reverse",
    with_entropy: bool = False,
) -> tuple[torch.Tensor, ...]:
    """`completion_logprobs` and the exact per-position KL to the teacher, in one pass.

    `kl="reverse"`: D(π_θ ‖ π_T) = Σ_v p_θ(v) (log p_θ(v) − log p_T(v)) (opd/dgrpo, estimator
    `full`); `kl="forward"`: D(π_T ‖ π_θ) = Σ_v p_T(v) (log p_T(v) − log p_θ(v)) (kd). Must
    equal, in value and in gradient w.r.t. the student, the naive float64
    `(p_s * (log_softmax(z_s) - log_softmax(z_t))).sum(-1)` (reverse; forward swaps the roles)
    with `z_s = h_s W_sᵀ / τ`, `z_t = h_t W_t[:V]ᵀ / τ`, plus the naive log-probs of
    `completion_logprobs`; memory ≈ 3 × chunk_size × V floats. The student's logits are computed
    once per chunk for both outputs. Gradients dKL/dz_s: p_s ⊙ (log p_s − log p_t − KL)
    (reverse), p_s − p_t (forward). The teacher gets no gradient: both its inputs are detached.

    Args:
        h_student: [..., H_s] student final-norm hidden states at completion positions.
        w_student: [V, H_s] student lm_head weight.
        targets: [...] completion token ids.
        h_teacher: [..., H_t] teacher hidden states at the same positions (H_t may differ).
        w_teacher: [V_t, H_t] teacher lm_head weight with V_t ≥ V. Only the first V rows are
            used: a teacher embedding padded past the shared tokenizer is sliced to the
            student's V, i.e. p_T is renormalised over the student's vocabulary (exact when the
            padding rows are never predicted). The tokenizers must be the same (models.py checks).
        temperature: τ applied to both student and teacher logits.
        chunk_size: positions per chunk.

    Returns:
        (logp [...], kl [...]) in float32 (float64 for float64 student inputs), plus the
        detached student entropy [...] with `with_entropy`.
    """
    logp, kl_value, entropy = _head(
        h_student, w_student, targets, h_teacher, w_teacher, temperature, chunk_size, kl, with_entropy
    )
    return (logp, kl_value, entropy) if with_entropy else (logp, kl_value)


@torch.no_grad()
def topk_logprobs(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    k: int,
    temperature: float = 1.0,
    chunk_size: int = 128,
    targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The k largest log-probs of softmax(h Wᵀ / τ) per position and their token ids, chunked.

    Must equal `torch.log_softmax(hidden @ W.T / τ, -1).topk(k, -1)` (values and ids); holds
    one [chunk_size, V] logits buffer at a time. No gradient: this is a teacher signal
    (`reverse_kl_topk` takes the teacher's top-k at the rollout τ).

    Args:
        hidden: [..., H] final-norm hidden states at completion positions.
        lm_head_weight: [V, H]; k: how many tokens per position; chunk_size: positions per chunk.
        targets: [...] token ids whose log-probs to return as well, from the same logits (a
            server's prompt log-probs: the top k plus the actual token, one head pass).

    Returns:
        (logp [..., k] float32, ids [..., k] long), sorted by decreasing log-prob; with
        `targets`, also their log-probs [...] (equal to `completion_logprobs`).
    """
    lead, flat = hidden.shape[:-1], hidden.reshape(-1, hidden.shape[-1])
    dtype = torch.promote_types(torch.float32, torch.result_type(flat, lm_head_weight))
    n = flat.shape[0]
    values = flat.new_empty((n, k), dtype=dtype)
    ids = torch.empty((n, k), dtype=torch.long, device=flat.device)
    chosen = None if targets is None else targets.reshape(-1)
    target_logp = None if targets is None else flat.new_empty(n, dtype=dtype)
    buf = flat.new_empty((min(chunk_size, max(n, 1)), lm_head_weight.shape[0]), dtype=dtype)
    for i in range(0, n, chunk_size):
        span = slice(i, min(i + chunk_size, n))
        z = _logits_into(buf, flat[span], lm_head_weight, temperature)
        top, ids[span] = z.topk(k, dim=-1)
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        values[span] = top - lse
        if chosen is not None:
            target_logp[span] = (z.gather(1, chosen[span, None]) - lse).squeeze(1)
    if targets is None:
        return values.view(*lead, k), ids.view(*lead, k)
    return values.view(*lead, k), ids.view(*lead, k), target_logp.view(lead)


class _GatheredLogits(torch.autograd.Function):
    """z[n, k] = h[n] · W[ids[n, k]], gathering W rows chunk by chunk in forward AND backward
    (autograd would otherwise keep every [chunk, K, H] gather alive until the backward)."""

    @staticmethod
    def forward(ctx, hidden, weight, ids, chunk_size):
        dtype = torch.promote_types(torch.float32, torch.result_type(hidden, weight))
        out = hidden.new_empty(ids.shape, dtype=dtype)
        for i in range(0, ids.shape[0], chunk_size):
            span = slice(i, i + chunk_size)
            out[span] = torch.bmm(weight[ids[span]].to(dtype), hidden[span, :, None].to(dtype)).squeeze(-1)
        ctx.save_for_backward(hidden, weight, ids)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, ids = ctx.saved_tensors
        dtype = grad.dtype
        dh = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(weight, dtype=dtype) if ctx.needs_input_grad[1] else None
        for i in range(0, ids.shape[0], ctx.chunk_size):
            span = slice(i, i + ctx.chunk_size)
            if dh is not None:  # dh[n] = Σ_k g[n, k] W[ids[n, k]]
                rows = weight[ids[span]].to(dtype)
                dh[span] = torch.bmm(grad[span, None, :], rows).squeeze(1).to(hidden.dtype)
            if dw is not None:  # dW[ids[n, k]] += g[n, k] h[n]
                outer = grad[span, :, None] * hidden[span, None, :].to(dtype)
                dw.index_add_(0, ids[span].reshape(-1), outer.reshape(-1, hidden.shape[-1]))
        return dh, None if dw is None else dw.to(weight.dtype), None, None


def gathered_logits(
    hidden: torch.Tensor, lm_head_weight: torch.Tensor, ids: torch.Tensor, chunk_size: int = 128
) -> torch.Tensor:
    """Logits h · W[id] at given token ids ([..., H] and [..., K] → [..., K], float32 or wider).

    Must equal `torch.einsum("...h,...kh->...k", hidden, W[ids])` in value and gradient, without
    ever holding the [..., K, H] gather (at C = 4k, K = 64, H = 4096 that is 1 GiB per row in
    bf16): `chunk_size` positions at a time in forward and backward.
    """
    lead, width = ids.shape[:-1], ids.shape[-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = _GatheredLogits.apply(flat, lm_head_weight, ids.reshape(-1, width), chunk_size)
    return out.view(*lead, width)


def lm_head_weight(model: torch.nn.Module) -> torch.Tensor:
    """The [V, H] weight that maps final-norm hidden states to logits (tied or not)."""
    return model.get_output_embeddings().weight


# --------------------------------------------------------------------------------------------
# Shared-prompt group forward
# --------------------------------------------------------------------------------------------


class _PromptKV(DynamicLayer):
    """Records one layer's prompt K/V [1, kv_heads, P, d] and returns them unchanged.

    Overwrites rather than appends, so a gradient-checkpoint replay of the prompt pass during
    backward stores equal values again instead of growing the cache.
    """

    def update(self, key_states, value_states, *args, **kwargs):
        self.device = key_states.device
        self.keys, self.values, self.is_initialized = key_states, value_states, True
        return key_states, value_states


@contextmanager
def _cache_through_checkpointing(model: torch.nn.Module) -> Iterator[None]:
    """Let checkpointed decoder layers keep our cache (transformers drops any cache there, since
    an appending cache would be written twice by the backward replay; ours never append), by
    setting `_can_checkpoint_with_cache` on the layer instances for the duration of the call."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    saved = [m.__dict__.get("_can_checkpoint_with_cache") for m in layers]
    for m in layers:
        m._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for m, old in zip(layers, saved, strict=True):
            if old is None:
                del m._can_checkpoint_with_cache
            else:
                m._can_checkpoint_with_cache = old


def prompt_forward(decoder: torch.nn.Module, prompt_ids: torch.Tensor):
    """Run a [1, P] prompt once: (final-norm hidden states [1, P, H], per-layer (K, V) [1, kv, P, d]).

    The K/V are what `shared_prefix=` takes (dgrpo.attention); with gradients enabled they stay
    in the autograd graph, so gradients from every completion reach the prompt's computation.
    """
    layers = [_PromptKV() for _ in range(decoder.config.num_hidden_layers)]
    with _cache_through_checkpointing(decoder):
        hidden = decoder(
            input_ids=prompt_ids,
            position_ids=torch.arange(prompt_ids.shape[1], device=prompt_ids.device)[None],
            cache=Cache(layers=layers),
            use_cache=False,
        ).last_hidden_state
    return hidden, [(layer.keys, layer.values) for layer in layers]


def group_forward(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    with_grad: bool,
) -> torch.Tensor:
    """Final-norm hidden states for G completions of one prompt, running the prompt once.

    Must equal, in value and in gradient w.r.t. every parameter, the naive G-fold forward
    `model.model(cat(prompt_ids, completion_ids[g, :n_g])).last_hidden_state[0, P-1 : P+n_g-1]`
    for each row g (n_g = completion_mask[g].sum()).

    The prompt runs once at batch size 1 (with gradients when `with_grad`); its per-layer K/V
    are kept once, never repeated per row, and the completions run as one batch with position
    ids P, P+1, ... attending to them through `dgrpo.attention.prefix_attention`. Gradients
    from every completion flow back through the shared K/V into the prompt's computation.
    `model.gradient_checkpointing_enable()` works (transformers' default non-reentrant
    checkpointing; a reentrant one would cut the gradient into the prompt and raises).

    Args:
        model: a HF causal LM (or its base model); its lm_head is applied by the caller with
            `completion_logprobs(hidden, lm_head_weight(model), completion_ids, ...)`.
        prompt_ids: [1, P] prompt token ids, no padding.
        completion_ids: [G, C] completion token ids, right-padded.
        completion_mask: [G, C] 1 for real completion tokens, 0 for right padding.
        with_grad: build the autograd graph (student) or not (teacher, old policy).

    Returns:
        [G, C, H] hidden states at positions P-1 .. P+C-2: entry [g, c] predicts
        completion_ids[g, c]. Entries where completion_mask is 0 are meaningless; mask them.
    """
    if prompt_ids.ndim != 2 or prompt_ids.shape[0] != 1:
        raise ValueError(f"prompt_ids must be [1, P], got {list(prompt_ids.shape)}")
    if completion_ids.shape != completion_mask.shape:
        raise ValueError("completion_ids and completion_mask must have the same [G, C] shape")
    mask = completion_mask.to(torch.bool)
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("completion_mask must be right-padded (ones, then zeros)")
    decoder = model.base_model  # final-norm hidden states; `model.model` for *ForCausalLM
    use_shared_prefix_attention(decoder)
    n_prompt, (n_rows, n_completion) = prompt_ids.shape[1], completion_ids.shape
    with torch.set_grad_enabled(with_grad):
        h_prompt, prefix = prompt_forward(decoder, prompt_ids)
        trainable = with_grad and any(p.requires_grad for p in decoder.parameters())
        if trainable and not prefix[0][0].requires_grad:
            raise ValueError(
                "prompt K/V carry no gradient: use non-reentrant gradient checkpointing "
                "(gradient_checkpointing_kwargs={'use_reentrant': False}, the default)"
            )
        # the output at the last prompt position predicts completion token 0, for every row
        first = h_prompt[:, -1:].expand(n_rows, 1, -1)
        if n_completion == 1:
            return first
        # the last completion token's output predicts nothing we score, so it is not run
        inputs = completion_ids[:, :-1]
        # completions attend to the one stored prompt K/V (dgrpo.attention) and causally to
        # themselves; right padding comes after every real token, so no mask is needed
        positions = torch.arange(n_prompt, n_prompt + inputs.shape[1], device=inputs.device)
        h_rest = decoder(
            input_ids=inputs,
            position_ids=positions[None].expand(n_rows, -1),
            use_cache=False,
            shared_prefix=prefix,
        ).last_hidden_state
        return torch.cat([first, h_rest], dim=1)
