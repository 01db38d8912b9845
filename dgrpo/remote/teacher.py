"""The teacher on an OpenAI-compatible server: log π_T of the sampled tokens (estimator
`sampled`, advantage-level dGRPO) and its top-K per completion position (estimator `topk`).

A group's G sequences prompt + completion go as token-id prompts, `teacher.server.batch_size`
per request with at most `max_concurrency` requests in flight; `max_tokens` 1 (the generated
token is ignored) and vLLM's `prompt_logprobs` K, which gives for every prompt position
{token id: {logprob, ...}} over the top K plus the actual token. Log-probs are at τ = 1.
"""

import torch

from dgrpo.config import TeacherConfig
from dgrpo.errors import UserError
from dgrpo.remote.client import ServerClient, check_tokenizer


class RemoteTeacher:
    signals = frozenset({"logp", "topk"})

    def __init__(self, client: ServerClient, top_k: int, vocab_rows: int):
        self.client, self.top_k, self.vocab_rows = client, top_k, vocab_rows

    @classmethod
    def connect(cls, cfg: TeacherConfig, tokenizer, vocab_rows: int) -> "RemoteTeacher":
        """A teacher at cfg.url whose tokenizer was checked against the student's."""
        client = ServerClient(cfg.url, cfg.served_model, cfg.server, role="teacher")
        check_tokenizer(client, tokenizer)
        return cls(client, cfg.top_k, vocab_rows)

    def score(self, prompt_ids, completion_ids, mask, need, temperature):
        from dgrpo.teacher import TeacherSignals  # the dataclass lives with the Teacher protocol

        n_prompt, lengths = prompt_ids.shape[1], mask.sum(1).tolist()
        prompt = prompt_ids[0].tolist()
        sequences = [prompt + completion_ids[g, :n].tolist() for g, n in enumerate(lengths)]
        top_k = self.top_k if "topk" in need else 0
        size = self.client.cfg.batch_size
        batches = [sequences[i : i + size] for i in range(0, len(sequences), size)]
        answered = self.client.map(lambda batch: self._request(batch, top_k), batches)
        choices = [choice for batch in answered for choice in batch]
        shape = completion_ids.shape
        logp = torch.zeros(shape)
        topk_logp, topk_ids = (
            torch.zeros((*shape, self.top_k)),
            torch.zeros((*shape, self.top_k), dtype=torch.long),
        )
        for g, (sequence, choice) in enumerate(zip(sequences, choices, strict=True)):
            entries = position_logprobs(choice, len(sequence))
            for c in range(lengths[g]):
                token, entry = sequence[n_prompt + c], entries[n_prompt + c]
                if token not in entry:
                    raise UserError(f"teacher server gave no log-prob for token {token}", self.client.fix)
                logp[g, c] = entry[token]
                if top_k:
                    topk_ids[g, c], topk_logp[g, c] = self._top(entry)
        device = completion_ids.device
        out = TeacherSignals(logp=logp.to(device))
        if top_k:
            out.topk_logp, out.topk_ids = topk_logp.to(device), topk_ids.to(device)
        return out

    def _request(self, sequences: list[list[int]], top_k: int) -> list[dict]:
        extra = {"prompt_logprobs": top_k, "return_tokens_as_token_ids": True}
        return self.client.complete(sequences, max_tokens=1, temperature=1.0, extra_body=extra)

    def _top(self, entry: dict[int, float]) -> tuple[torch.Tensor, torch.Tensor]:
        top = sorted(entry.items(), key=lambda item: -item[1])[: self.top_k]
        if len(top) < self.top_k:
            raise UserError(
                f"teacher server returned {len(top)} < {self.top_k} top log-probs", self.client.fix
            )
        ids = torch.tensor([t for t, _ in top])
        if int(ids.max()) >= self.vocab_rows:
            raise UserError(
                f"teacher server returned token id {int(ids.max())} beyond the student's {self.vocab_rows} "
                "vocabulary rows",
                "serve a teacher with the student's vocabulary",
            )
        return ids, torch.tensor([v for _, v in top])


def position_logprobs(choice: dict, n_tokens: int) -> list[dict[int, float]]:
    """Per prompt position, {token id: log-prob} from vLLM's prompt_logprobs
    ([None, {"id": {"logprob": x, ...}}, ...]); position 0 (no context) is empty."""
    if choice.get("prompt_logprobs") is None:
        raise UserError(
            "teacher server returned no prompt_logprobs",
            "serve the teacher with vLLM or `dgrpo serve` (OpenAI's own API has no prompt log-probs)",
        )
    rows = choice["prompt_logprobs"][:n_tokens]
    return [{int(t): float(v["logprob"]) for t, v in (row or {}).items()} for row in rows]


def token_id(token: str) -> int:
    """The id in a "token_id:<id>" string (return_tokens_as_token_ids)."""
    head, _, value = str(token).rpartition(":")
    if head != "token_id":
        raise UserError(
            f"server returned token {token!r}, not 'token_id:<id>'",
            "use a server that supports return_tokens_as_token_ids (vLLM, `dgrpo serve`)",
        )
    return int(value)
