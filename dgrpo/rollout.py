"""Rollouts: G completions per prompt (sampled, or the fixed response), scored by the rewards.

A `Group` is one prompt and its completions; every later stage (teacher scoring, forward,
loss, metrics) works on groups, so the shared prompt runs once per group. Sampling
(`dgrpo.sampling`) also runs the prompt once and holds its K/V once for the G rows. A model
may be a sharded root (`dgrpo.sharding`): sampling gathers it once, scoring calls through it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from dgrpo import sharding
from dgrpo.config import RolloutConfig
from dgrpo.data import Example
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight
from dgrpo.sampling import sample_completions
from dgrpo.teacher import select_rows
from longblocks.rewards import score

if TYPE_CHECKING:
    from dgrpo.teacher import TeacherSignals


@dataclass
class Group:
    """One prompt and its G completions; later stages fill the optional fields."""

    example: Example
    prompt_ids: torch.Tensor  # [1, P]
    completion_ids: torch.Tensor  # [G, C] right-padded with the pad id
    mask: torch.Tensor  # [G, C] bool: real completion tokens, the stop token included
    truncated: torch.Tensor  # [G] bool: no stop token within max_new_tokens
    texts: list[str]
    rewards: torch.Tensor | None = None  # [G] from longblocks.rewards
    statuses: list[str] | None = None  # per completion: ok / unparsable / truncated
    loss_mask: torch.Tensor | None = None  # [G, C] tokens the loss counts (mask minus filtered rows)
    adv: torch.Tensor | None = None  # [G] group-relative advantages A_i
    logp_old: torch.Tensor | None = None  # [G, C] log π_old(y_t), when update_epochs > 1
    logp_ref: torch.Tensor | None = None  # [G, C] log π_ref(y_t), when β > 0
    teacher: TeacherSignals | None = None
    logp_sampler: torch.Tensor | None = None  # [G, C] log π_sampler(y_t) from a rollout server

    @property
    def size(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, rows: slice) -> Group:
        """Completion rows `rows` of this group with their scores and signals (same prompt).
        Advantages were computed over the whole group before any split."""
        take = partial(select_rows, rows=rows)
        return replace(
            self, completion_ids=take(self.completion_ids), mask=take(self.mask),
            truncated=take(self.truncated), texts=take(self.texts), rewards=take(self.rewards),
            statuses=take(self.statuses), loss_mask=take(self.loss_mask), adv=take(self.adv),
            logp_old=take(self.logp_old), logp_ref=take(self.logp_ref), logp_sampler=take(self.logp_sampler),
            teacher=None if self.teacher is None else self.teacher.select(rows),
        )  # fmt: skip


def sample_group(
    model,
    tokenizer,
    example: Example,
    cfg: RolloutConfig,
    group_size: int,
    *,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Group:
    """G completions of one prompt (dgrpo.sampling), stopped at a stop token or max_new_tokens.
    `autocast` is the training forward's, so samples come from the policy that is trained."""
    with sharding.gathered(model) as hf_model:
        return _sample(hf_model, tokenizer, example, cfg, group_size, greedy, generator, autocast)


def _sample(model, tokenizer, example, cfg, group_size, greedy, generator, autocast) -> Group:
    prompt = torch.tensor([example.prompt_ids], device=model.device)
    was_training = model.training
    model.eval()  # no dropout while sampling
    try:
        completions = sample_completions(
            model,
            prompt,
            group_size,
            max_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens,
            stop_ids=stop_ids(tokenizer),
            pad_id=tokenizer.pad_token_id,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            greedy=greedy,
            generator=generator,
            autocast=autocast,
        )
    finally:
        model.train(was_training)
    return make_group(example, prompt, completions, tokenizer)


def fixed_group(example: Example, tokenizer, device: torch.device | str = "cpu") -> Group:
    """The example's fixed response (sft/kd) as a group of one completion."""
    prompt = torch.tensor([example.prompt_ids], device=device)
    return make_group(example, prompt, torch.tensor([example.response_ids], device=device), tokenizer)


def widen(group: Group, width: int, pad_id: int) -> Group:
    """The group with at least `width` completion positions (padding is masked out): sharded
    models need every group to run the decoder the same number of times (dgrpo.sharding)."""
    missing = width - group.completion_ids.shape[1]
    if missing <= 0:
        return group
    return replace(
        group,
        completion_ids=F.pad(group.completion_ids, (0, missing), value=pad_id),
        mask=F.pad(group.mask, (0, missing), value=False),
        loss_mask=None if group.loss_mask is None else F.pad(group.loss_mask, (0, missing), value=False),
    )


def stop_ids(tokenizer) -> list[int]:
    """Tokens that end a completion: EOS (Qwen3: <|im_end|>) and the end-of-text/pad token."""
    return sorted({tokenizer.eos_token_id, tokenizer.pad_token_id} - {None})


def make_group(example: Example, prompt: torch.Tensor, completions: torch.Tensor, tokenizer) -> Group:
    is_stop = torch.isin(completions, torch.tensor(stop_ids(tokenizer), device=completions.device))
    stopped = is_stop.any(dim=1)
    # a completion ends at its first stop token (included: the model must learn to stop)
    first_stop = torch.where(stopped, is_stop.int().argmax(dim=1), completions.shape[1] - 1)
    positions = torch.arange(completions.shape[1], device=completions.device)
    mask = positions[None] <= first_stop[:, None]
    completions = completions.masked_fill(~mask, tokenizer.pad_token_id)
    lengths = mask.sum(1).tolist()
    texts = [
        tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
        for row, n in zip(completions, lengths, strict=True)
    ]
    return Group(example, prompt, completions, mask, ~stopped, texts, loss_mask=mask)


def score_group(group: Group, truncation: str) -> None:
    """Rewards from longblocks.rewards for the row's verification kind, per rollout.truncation."""
    flags = group.truncated.tolist()
    scores = [
        score(text, group.example.verification, truncated=cut and truncation != "score")
        for text, cut in zip(group.texts, flags, strict=True)
    ]
    group.rewards = torch.tensor([s.value for s in scores], dtype=torch.float32)
    group.statuses = ["truncated" if cut else s.status for s, cut in zip(scores, flags, strict=True)]
    if truncation == "mask":  # filtered completions keep their reward for the group baseline
        group.loss_mask = group.mask & ~group.truncated[:, None].to(group.mask.device)


def frozen_logprobs(
    model,
    group: Group,
    temperature: float,
    chunk_size: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """log π(y_t) [G, C] of the group's completions under a frozen model (π_old or π_ref), at τ."""

    def logprobs(hf_model) -> torch.Tensor:
        with autocast():
            hidden = group_forward(
                hf_model, group.prompt_ids, group.completion_ids, group.mask, with_grad=False
            )
        return completion_logprobs(
            hidden, lm_head_weight(hf_model), group.completion_ids, temperature, chunk_size
        )

    with torch.no_grad():
        return sharding.call(model, logprobs)
