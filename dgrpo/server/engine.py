"""The model behind `dgrpo serve`: completions with log-probs, prompt log-probs, weight updates.

Every computation reuses the trainer's own code (`dgrpo.sampling` to sample, `dgrpo.logprobs` to
score), so a server holding the trainer's weights returns the trainer's numbers: greedy
completions token for token, log-probs to float rounding. Requests run one at a time under a
lock (the model is shared; torch parallelises within a request).

Log-probs of generated tokens are those of the distribution that sampled them, softmax(z / τ)
(vLLM: `--logprobs-mode processed_logprobs`); greedy requests (temperature 0) report τ = 1.
Prompt log-probs are always at τ = 1, as in vLLM.
"""

import math
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file

from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight, topk_logprobs
from dgrpo.rollout import stop_ids
from dgrpo.sampling import sample_completions

MAX_LOGPROBS = 1000  # largest K of `logprobs` / `prompt_logprobs` (vLLM's default cap is 20)
MAX_N = 1024  # completions per prompt in one request


class RequestError(ValueError):
    """A malformed request: HTTP 400 with this message."""


class Engine:
    def __init__(self, model: torch.nn.Module, tokenizer, name: str, chunk_size: int = 256):
        self.model, self.tokenizer, self.name, self.chunk_size = model.eval(), tokenizer, name, chunk_size
        self.model.requires_grad_(False)
        self.lock = threading.Lock()
        self.version = 0  # weight updates applied so far

    # ---------------------------------------------------------------------------------------
    # OpenAI routes
    # ---------------------------------------------------------------------------------------

    def models(self) -> dict:
        card = {"id": self.name, "object": "model", "owned_by": "dgrpo", "max_model_len": self.max_len}
        return {"object": "list", "data": [card]}

    def completions(self, body: dict) -> dict:
        """POST /v1/completions with token-id prompts (one list, or a list of lists)."""
        self._check_model(body)
        prompts = _token_prompts(body.get("prompt"))
        n, max_tokens = int(body.get("n") or 1), int(body.get("max_tokens") or 16)
        if not 1 <= n <= MAX_N or not 1 <= max_tokens <= (self.max_len or max_tokens):
            raise RequestError(f"n must be in [1, {MAX_N}] and max_tokens in [1, {self.max_len}]")
        if body.get("echo"):
            raise RequestError("echo is not supported; ask for prompt_logprobs instead")
        top_prompt = _logprob_count(body.get("prompt_logprobs"), "prompt_logprobs")
        top_sampled = _logprob_count(body.get("logprobs"), "logprobs")
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        choices = []
        with self.lock, torch.no_grad():
            scored_all = self._prompt_logprobs(prompts, top_prompt) if top_prompt is not None else None
            for index, prompt in enumerate(prompts):
                generated = self._generate(prompt, n, max_tokens, body)
                scored = scored_all[index] if scored_all is not None else None
                sampled = (
                    self._sampled_logprobs(
                        prompt, [tokens for tokens, _ in generated], top_sampled, body, as_ids
                    )
                    if top_sampled is not None
                    else [None] * len(generated)
                )
                for row, (tokens, finish) in enumerate(generated):
                    choice = {
                        "index": index * n + row,
                        "text": self.tokenizer.decode(tokens, skip_special_tokens=True),
                        "finish_reason": finish,
                        "logprobs": sampled[row],
                        "prompt_logprobs": scored,
                        "token_ids": tokens,
                    }
                    choices.append(choice)
        n_prompt = sum(len(p) for p in prompts)
        n_completion = sum(len(c["token_ids"]) for c in choices)
        usage = {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion,
        }
        return {
            "id": f"cmpl-{self.version}",
            "object": "text_completion",
            "model": self.name,
            "choices": choices,
            "usage": usage,
            "created": 0,
        }

    def tokenize(self, body: dict) -> dict:
        """POST /tokenize (vLLM): text -> the ids the served tokenizer gives."""
        self._check_model(body)
        ids = self.tokenizer.encode(
            str(body.get("prompt", "")), add_special_tokens=body.get("add_special_tokens", True)
        )
        return {"tokens": ids, "count": len(ids), "max_model_len": self.max_len}

    def detokenize(self, body: dict) -> dict:
        """POST /detokenize (vLLM): ids -> text, special tokens kept."""
        self._check_model(body)
        return {"prompt": self.tokenizer.decode([int(t) for t in body.get("tokens", [])])}

    # ---------------------------------------------------------------------------------------
    # Weights
    # ---------------------------------------------------------------------------------------

    def load_named(self, tensors) -> int:
        """Copy (name, tensor) pairs into the model's parameters; the lock is held by the caller."""
        params = dict(self.model.named_parameters())
        count = 0
        for name, tensor in tensors:
            if name not in params:
                raise RequestError(f"unknown parameter {name!r}")
            if tuple(params[name].shape) != tuple(tensor.shape):
                raise RequestError(
                    f"parameter {name!r} has shape {list(params[name].shape)}, got {list(tensor.shape)}"
                )
            params[name].copy_(tensor)
            count += 1
        return count

    def load_directory(self, path: str) -> int:
        """Load every *.safetensors file of a saved model directory (`save_pretrained`)."""
        files = sorted(Path(path).glob("*.safetensors"))
        if not Path(path).is_absolute() or not files:
            raise RequestError(f"{path!r} is not an absolute directory holding *.safetensors files")
        params = dict(self.model.named_parameters())
        count = 0
        with self.lock, torch.no_grad():
            for file in files:
                # tied weights are saved once; names of parameters we do not hold are skipped
                count += self.load_named((k, v) for k, v in load_file(file).items() if k in params)
            self.version += 1
        return count

    @property
    def max_len(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0)

    # ---------------------------------------------------------------------------------------
    # Computation
    # ---------------------------------------------------------------------------------------

    def _generate(
        self, prompt: list[int], n: int, max_tokens: int, body: dict
    ) -> list[tuple[list[int], str]]:
        """n completions of one prompt: (token ids with the stop token, finish_reason)."""
        temperature = _temperature(body)
        stops = sorted(set(body.get("stop_token_ids") or []) | set(stop_ids(self.tokenizer)))
        device = self._device
        ids = torch.tensor([prompt], device=device)
        settings = dict(
            max_new_tokens=max_tokens,
            stop_ids=stops,
            pad_id=self.tokenizer.pad_token_id,
            temperature=temperature or 1.0,  # 0 means greedy (below)
            top_k=max(0, int(body.get("top_k") or 0)),
            top_p=float(body.get("top_p") or 1.0),
            min_new_tokens=int(body.get("min_tokens") or 0),
            greedy=temperature == 0,
        )
        seed = body.get("seed")
        with torch.random.fork_rng(
            devices=[] if device.type == "cpu" else [device], enabled=seed is not None
        ):
            if seed is not None:
                torch.manual_seed(int(seed))
            rows = sample_completions(self.model, ids, n, **settings)
        out = []
        for row in rows.tolist():
            end = next((i for i, t in enumerate(row) if t in stops), None)
            out.append((row[: end + 1], "stop") if end is not None else (row, "length"))
        return out

    def _sampled_logprobs(
        self, prompt, rows: list[list[int]], top: int, body: dict, as_ids: bool
    ) -> list[dict]:
        """OpenAI `logprobs` of a prompt's completions: each token's log-prob at the sampling τ
        (and the `top` likeliest), the prompt run once for all rows."""
        temperature = _temperature(body) or 1.0  # greedy completions report log-probs at τ = 1
        width = max(len(tokens) for tokens in rows)
        completions = torch.tensor([t + [0] * (width - len(t)) for t in rows], device=self._device)
        mask = torch.tensor([[i < len(t) for i in range(width)] for t in rows], device=self._device)
        hidden = group_forward(self.model, torch.tensor([prompt], device=self._device), completions, mask,
                               with_grad=False)  # fmt: skip
        weight = lm_head_weight(self.model)
        logp = completion_logprobs(hidden, weight, completions, temperature, self.chunk_size).tolist()
        if top > 0:
            values, ids = (
                t.tolist() for t in topk_logprobs(hidden, weight, top, temperature, self.chunk_size)
            )
        name, out = self._names(as_ids), []
        for g, tokens in enumerate(rows):
            n = len(tokens)
            entry = {"tokens": name(tokens), "token_logprobs": logp[g][:n], "top_logprobs": None,
                     "text_offset": [0] * n}  # fmt: skip
            if top > 0:
                entry["top_logprobs"] = [
                    dict(zip(name(i), v, strict=True)) | {name([t])[0]: lp}
                    for i, v, t, lp in zip(ids[g][:n], values[g][:n], tokens, logp[g][:n], strict=True)
                ]
            out.append(entry)
        return out

    def _prompt_logprobs(self, sequences: list[list[int]], top: int) -> list[list]:
        """vLLM's `prompt_logprobs` per sequence: None, then for each position t ≥ 1
        {str(id): {logprob, rank}} over the top `top` tokens and the actual one.

        The sequences' common prefix (a group's shared prompt) runs and is scored once: the same
        numbers as scoring each sequence alone (`group_forward`'s contract), at a fraction of
        the head's cost for long prompts."""
        if min(len(s) for s in sequences) < 2:  # a one-token prompt has nothing to score
            if len(sequences) == 1:
                return [[None] * len(sequences[0])]
            return [self._prompt_logprobs([s], top)[0] for s in sequences]
        shared = _common_prefix(sequences)
        ids = torch.tensor([sequences[0][:shared]], device=self._device)
        rest = [sequence[shared:] for sequence in sequences]
        width = max(len(r) for r in rest)
        completions = torch.tensor([r + [0] * (width - len(r)) for r in rest], device=self._device)
        mask = torch.tensor([[i < len(r) for i in range(width)] for r in rest], device=self._device)
        # hidden states predicting tokens 1 .. shared-1 (the prefix), then each sequence's rest
        prefix = group_forward(self.model, ids[:, :1], ids[:, 1:], torch.ones_like(ids[:, 1:]).bool(),
                               with_grad=False) if shared > 1 else None  # fmt: skip
        tails = group_forward(self.model, ids, completions, mask, with_grad=False)
        head = self._score_positions(prefix, ids[:, 1:], top)[0] if prefix is not None else []
        scored = self._score_positions(tails, completions, top)
        return [[None, *head, *rows[: len(r)]] for rows, r in zip(scored, rest, strict=True)]

    def _score_positions(self, hidden: torch.Tensor, targets: torch.Tensor, top: int) -> list[list[dict]]:
        """Per row and position, {str(id): {logprob, rank}}: the top `top` tokens and the target."""
        weight = lm_head_weight(self.model)
        if top > 0:  # the top k and the targets from one pass over the head
            values, top_ids, logp = topk_logprobs(hidden, weight, top, 1.0, self.chunk_size, targets=targets)
            values, top_ids = values.tolist(), top_ids.tolist()
        else:
            logp = completion_logprobs(hidden, weight, targets, 1.0, self.chunk_size)
        logp = logp.tolist()
        out = []
        for g, row in enumerate(targets.tolist()):
            entries = []
            for t, token in enumerate(row):
                entry = {}
                if top > 0:
                    pairs = zip(top_ids[g][t], values[g][t], strict=True)
                    entry = {str(i): {"logprob": v, "rank": r + 1} for r, (i, v) in enumerate(pairs)}
                entry.setdefault(str(token), {"logprob": logp[g][t], "rank": None})
                entries.append(entry)
            out.append(entries)
        return out

    def _names(self, as_ids: bool):
        if as_ids:
            return lambda ids: [f"token_id:{i}" for i in ids]
        return lambda ids: self.tokenizer.convert_ids_to_tokens(list(ids))

    def _check_model(self, body: dict) -> None:
        if body.get("model") not in (None, self.name):
            raise ModelNotFound(
                f"the model `{body.get('model')}` does not exist; this server serves `{self.name}`"
            )

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


class ModelNotFound(RequestError):
    """HTTP 404, as vLLM answers a request for a model it does not serve."""


def _temperature(body: dict) -> float:
    """The request's τ (OpenAI's default 1; 0 asks for greedy decoding)."""
    value = body.get("temperature")
    temperature = 1.0 if value is None else float(value)
    if not 0 <= temperature < math.inf:
        raise RequestError(f"temperature must be >= 0, got {value}")
    return temperature


def _common_prefix(sequences: list[list[int]]) -> int:
    """Length of the prefix every sequence shares, kept ≥ 1 and short enough that each sequence
    has at least one token after it."""
    shared = min(len(s) for s in sequences) - 1
    for sequence in sequences[1:]:
        shared = next((i for i in range(shared) if sequence[i] != sequences[0][i]), shared)
    return max(shared, 1)


def _token_prompts(prompt) -> list[list[int]]:
    """A token-id prompt (list of ints) or a batch of them; text prompts are refused (the trainer
    never sends text: re-tokenising would drift from the student's ids)."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompt)
    ):
        return prompt
    raise RequestError("prompt must be token ids: a non-empty list of ints, or a list of such lists")


def _logprob_count(value, field: str) -> int | None:
    if value is None or value is False:
        return None
    count = int(value)
    if not 0 <= count <= MAX_LOGPROBS or (isinstance(value, float) and not math.isfinite(value)):
        raise RequestError(f"{field} must be in [0, {MAX_LOGPROBS}], got {value}")
    return count
