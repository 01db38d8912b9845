"""Sampling G completions of one prompt while holding the prompt's K/V once.

`model.generate(input_ids=prompt.expand(G, -1))` prefills the prompt G times and keeps G copies
of its KV cache; at 16k tokens and G = 8 that copy is most of the rollout's memory, and each
decoding step reads all of it. Here the prompt runs once at batch size 1 (`prompt_forward`),
its last hidden state gives the first token's distribution for all G rows, and every later
step runs the G new tokens against the single prompt K/V plus a small per-row cache of the
completion so far (`dgrpo.attention`). Memory: one prompt K/V + G × completion K/V.

Sampling follows transformers' order for the same settings: EOS blocked before
`min_new_tokens`, then temperature, top-k, top-p, then a draw (or argmax when greedy). The
model's generation_config is not read: the rollout config is the one source of settings.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from transformers import DynamicCache

from dgrpo.attention import use_shared_prefix_attention
from dgrpo.logprobs import lm_head_weight, prompt_forward


@torch.no_grad()
def sample_completions(
    model,
    prompt_ids: torch.Tensor,
    group_size: int,
    *,
    max_new_tokens: int,
    stop_ids: list[int],
    pad_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """[G, ≤ max_new_tokens] completion ids; a row that stopped is padded with `pad_id` after
    its stop token. Generation ends when every row stopped or at max_new_tokens."""
    decoder = model.base_model
    use_shared_prefix_attention(decoder)
    weight = lm_head_weight(model)
    n_prompt = prompt_ids.shape[1]
    with autocast():
        hidden, prefix = prompt_forward(decoder, prompt_ids)
    hidden = hidden[:, -1].expand(group_size, -1)
    own = DynamicCache(config=decoder.config)  # the completions' K/V, [G, kv, t, d] per layer
    stops = torch.tensor(stop_ids, device=prompt_ids.device)
    done = torch.zeros(group_size, dtype=torch.bool, device=prompt_ids.device)
    tokens = []
    for step in range(max_new_tokens):
        logits = (hidden.to(weight.dtype) @ weight.T).float()
        if step < min_new_tokens:
            logits[:, stops] = float("-inf")
        chosen = logits.argmax(-1) if greedy else draw(logits, temperature, top_k, top_p, generator)
        chosen = chosen.masked_fill(done, pad_id)
        tokens.append(chosen)
        done |= torch.isin(chosen, stops)
        if done.all() or step == max_new_tokens - 1:
            break
        position = torch.full((group_size, 1), n_prompt + step, device=prompt_ids.device)
        with autocast():
            hidden = decoder(
                input_ids=chosen[:, None],
                position_ids=position,
                cache=own,
                use_cache=True,
                shared_prefix=prefix,
            ).last_hidden_state[:, -1]
    return torch.stack(tokens, dim=1)


def draw(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row from softmax(logits / τ) restricted to the top-k, then to the nucleus.

    top_k = 0 and top_p = 1 keep the whole distribution (π at τ, what the objective assumes).
    The nucleus is the smallest set of most likely tokens whose probability reaches top_p.
    """
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the likelier tokens already reach top_p
        logits = logits.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), float("-inf"))
    # inverse CDF: the first token whose cumulative probability exceeds u ~ U[0, total) is v with
    # probability p_v (never a token with p_v = 0). torch.multinomial does the same draw but
    # took ~2/3 of a rollout on CPU at a 151,936-token vocabulary (37 ms vs 8 ms per step).
    cdf = logits.softmax(-1).double().cumsum(-1)
    u = torch.rand(cdf.shape[0], 1, dtype=cdf.dtype, device=cdf.device, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1).squeeze(-1)
