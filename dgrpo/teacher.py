"""The teacher π_T: a local Hugging Face model, or a remote OpenAI-compatible server (vLLM).

A teacher scores one group's completions (no gradient anywhere) and says which signals it can
give: "hidden" (final-norm hidden states + lm_head, for exact chunked KL: estimator `full` and
kd), "logp" (log π_T of the sampled tokens: estimator `sampled`, advantage-level dGRPO, and the
KL metric) and "topk" (its K likeliest tokens per position: estimator `topk`). A remote server
returns log-probs only, so it cannot give "hidden".
"""

import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from dgrpo.config import TrainConfig
from dgrpo.errors import UserError
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight, topk_logprobs
from dgrpo.models import check_compatible, freeze, load_model, load_tokenizer


@dataclass
class TeacherSignals:
    """What the teacher says about one group's G completions; every tensor is detached."""

    hidden: torch.Tensor | None = None  # [G, C, H_t] final-norm hidden states at completion positions
    weight: torch.Tensor | None = None  # [V_t, H_t] the teacher's lm_head
    logp: torch.Tensor | None = None  # [G, C] log π_T(y_t) at the rollout temperature τ
    topk_logp: torch.Tensor | None = None  # [G, C, K] log-probs at τ of its K likeliest tokens
    topk_ids: torch.Tensor | None = None  # [G, C, K]

    def select(self, rows: slice) -> "TeacherSignals":
        """The signals of completion rows `rows` (the lm_head weight is shared)."""
        return replace(
            self, hidden=select_rows(self.hidden, rows), logp=select_rows(self.logp, rows),
            topk_logp=select_rows(self.topk_logp, rows), topk_ids=select_rows(self.topk_ids, rows),
        )  # fmt: skip


def select_rows(items, rows: slice):
    """items[rows] along the completion-row dimension (tensors or per-row lists); None stays None."""
    return None if items is None else items[rows]


class Teacher(Protocol):
    signals: frozenset[str]  # which of "hidden", "logp", "topk" this teacher can give

    def score(
        self,
        prompt_ids: torch.Tensor,
        completion_ids: torch.Tensor,
        mask: torch.Tensor,
        need: frozenset[str],
        temperature: float,
    ) -> TeacherSignals:
        """Signals for prompt [1, P] and right-padded completions [G, C] with mask [G, C]."""
        ...


class LocalTeacher:
    """A local causal LM; the shared prompt runs once per group (`group_forward`)."""

    signals = frozenset({"hidden", "logp", "topk"})

    def __init__(
        self,
        model: torch.nn.Module,
        top_k: int,
        chunk_size: int,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ):
        self.model, self.top_k, self.chunk_size, self.autocast = freeze(model), top_k, chunk_size, autocast

    def score(self, prompt_ids, completion_ids, mask, need, temperature) -> TeacherSignals:
        with self.autocast():
            hidden = group_forward(self.model, prompt_ids, completion_ids, mask, with_grad=False)
        weight = lm_head_weight(self.model)
        out = TeacherSignals()
        if "hidden" in need:
            out.hidden, out.weight = hidden, weight
        if "logp" in need:
            with torch.no_grad():
                out.logp = completion_logprobs(hidden, weight, completion_ids, temperature, self.chunk_size)
        if "topk" in need:
            out.topk_logp, out.topk_ids = topk_logprobs(
                hidden, weight, self.top_k, temperature, self.chunk_size
            )
        return out


class RemoteTeacher:
    """An OpenAI-compatible /completions endpoint scoring token-id prompts (vLLM).

    One request per group: `prompt` is the list of the G sequences prompt + completion (token
    ids), `max_tokens` 1 (the generated token is ignored) and `prompt_logprobs` K, vLLM's field
    giving, for every prompt position, {token id: {logprob, ...}} over the top K plus the actual
    token. A server that only supports OpenAI's `echo` + `logprobs.token_logprobs` still serves
    "logp". Log-probs come at the server's temperature 1.
    """

    signals = frozenset({"logp", "topk"})

    def __init__(self, url: str, model: str, top_k: int, timeout_s: float):
        self.endpoint = url.rstrip("/") + "/completions"
        self.model, self.top_k, self.timeout_s = model, top_k, timeout_s

    def score(self, prompt_ids, completion_ids, mask, need, temperature) -> TeacherSignals:
        n_prompt, lengths = prompt_ids.shape[1], mask.sum(1).tolist()
        prompt = prompt_ids[0].tolist()
        sequences = [prompt + completion_ids[g, :n].tolist() for g, n in enumerate(lengths)]
        choices = self._request(sequences, self.top_k if "topk" in need else 0)
        device = completion_ids.device
        out = TeacherSignals(logp=torch.zeros(completion_ids.shape, device=device))
        if "topk" in need:
            out.topk_logp = torch.zeros((*completion_ids.shape, self.top_k), device=device)
            out.topk_ids = torch.zeros((*completion_ids.shape, self.top_k), dtype=torch.long, device=device)
        for g, (sequence, choice) in enumerate(zip(sequences, choices, strict=True)):
            entries = _position_logprobs(choice, len(sequence))
            for c in range(lengths[g]):
                token, entry = sequence[n_prompt + c], entries[n_prompt + c]
                if token not in entry:
                    raise UserError(f"teacher server gave no log-prob for token {token}", _SERVER_FIX)
                out.logp[g, c] = entry[token]
                if "topk" in need:
                    top = sorted(entry.items(), key=lambda item: -item[1])[: self.top_k]
                    if len(top) < self.top_k:
                        raise UserError(
                            f"teacher server returned {len(top)} < {self.top_k} top log-probs", _SERVER_FIX
                        )
                    out.topk_ids[g, c] = torch.tensor([t for t, _ in top])
                    out.topk_logp[g, c] = torch.tensor([v for _, v in top])
        return out

    def _request(self, sequences: list[list[int]], top_k: int) -> list[dict]:
        body = {
            "model": self.model,
            "prompt": sequences,
            "max_tokens": 1,
            "temperature": 1.0,
            "echo": True,
            "logprobs": 1,
            "prompt_logprobs": top_k,
        }
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as err:
            raise UserError(f"teacher server {self.endpoint} failed: {err}", _SERVER_FIX) from err
        choices = sorted(payload.get("choices", []), key=lambda choice: choice.get("index", 0))
        if len(choices) != len(sequences):
            raise UserError(
                f"teacher server answered {len(choices)} of {len(sequences)} prompts", _SERVER_FIX
            )
        return choices


_SERVER_FIX = "check teacher.url points at a vLLM-compatible /v1 endpoint serving teacher.served_model"


def _position_logprobs(choice: dict, n_tokens: int) -> list[dict[int, float]]:
    """Per prompt position, {token id: log-prob}; position 0 (no context) is empty."""
    if choice.get("prompt_logprobs") is not None:  # vLLM: [None, {"id": {"logprob": x, ...}}, ...]
        rows = choice["prompt_logprobs"][:n_tokens]
        return [{int(t): float(v["logprob"]) for t, v in (row or {}).items()} for row in rows]
    echo = (choice.get("logprobs") or {}).get("token_logprobs")
    tokens = (choice.get("logprobs") or {}).get("tokens")
    if echo is None or tokens is None:
        raise UserError(
            "teacher server returned neither prompt_logprobs nor echoed token_logprobs", _SERVER_FIX
        )
    # OpenAI echo format: tokens as "token_id:<id>" strings (vLLM --return-tokens-as-token-ids)
    ids = [int(str(t).rsplit(":", 1)[-1]) for t in tokens[:n_tokens]]
    return [
        {i: float(v)} if v is not None and not math.isnan(v) else {} for i, v in zip(ids, echo, strict=False)
    ]


def load_teacher(
    cfg: TrainConfig,
    tokenizer,
    student: torch.nn.Module,
    autocast: Callable[[], AbstractContextManager],
    device,
) -> Teacher | None:
    """The configured teacher when the method needs one (checked against the student's tokenizer)."""
    if not cfg.terms.needs_teacher:
        return None
    if cfg.teacher.url:
        return RemoteTeacher(
            cfg.teacher.url, cfg.teacher.served_model, cfg.teacher.top_k, cfg.teacher.timeout_s
        )
    model = load_model(cfg.teacher.model, seed=cfg.run.seed + 1, dtype=cfg.model.dtype).to(device)
    check_compatible(tokenizer, load_tokenizer(cfg.teacher.model), student, model, role="teacher")
    return LocalTeacher(model, cfg.teacher.top_k, cfg.loss.chunk_size, autocast)
