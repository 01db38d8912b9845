"""Rollouts on a server (`rollout.backend: server`): G completions per prompt from an
OpenAI-compatible server prompted by token ids (no re-tokenisation drift), with the sampler's
log-prob of every token (kept as `Group.logp_sampler` for the mismatch correction,
dgrpo.mismatch). The server's weights follow the policy: pushed once at start (a resumed run
included) and after every optimizer step (dgrpo.remote.weights).

Each prompt's request carries a seed drawn from the trainer's RNG, so a run (and its resumption
from a checkpoint, which restores that RNG) asks for the same samples.
"""

import logging
import math
import time
from pathlib import Path

import torch

from dgrpo import distributed
from dgrpo.config import TrainConfig
from dgrpo.data import Example
from dgrpo.errors import UserError
from dgrpo.remote.client import ServerClient, check_tokenizer
from dgrpo.remote.teacher import token_id
from dgrpo.remote.weights import WeightPush, weight_push
from dgrpo.rollout import Group, make_group, stop_ids

log = logging.getLogger(__name__)


class ServerRollout:
    def __init__(self, client: ServerClient, tokenizer, cfg: TrainConfig, pusher: WeightPush | None, device):
        self.client, self.tokenizer, self.cfg, self.pusher = client, tokenizer, cfg.rollout, pusher
        self.device = torch.device(device)  # where the groups' tensors go (the student's device)
        self.sync_seconds = 0.0  # wall time of the last weight push

    @classmethod
    def connect(cls, cfg: TrainConfig, tokenizer, run_dir: Path, device="cpu") -> "ServerRollout":
        """Client, tokenizer probe and (rank 0) the weight-sync connection to rollout.url."""
        client = ServerClient(cfg.rollout.url, cfg.rollout.served_model, cfg.rollout.server, role="rollout")
        check_tokenizer(client, tokenizer)
        pusher = None
        if distributed.is_main():
            directory = Path(cfg.rollout.sync_dir or Path(run_dir) / "server-weights")
            pusher = weight_push(client, cfg.rollout.weight_sync, cfg.rollout.sync_address, directory)
        return cls(client, tokenizer, cfg, pusher, device)

    def close(self) -> None:
        self.client.close()

    def push(self, model: torch.nn.Module) -> None:
        """The server samples from `model`'s weights once this returns (every rank waits)."""
        start = time.perf_counter()
        if self.pusher is not None:
            self.pusher.push(model)
        distributed.barrier()
        self.sync_seconds = time.perf_counter() - start

    def sample_groups(self, examples: list[Example], group_size: int, *, greedy: bool = False) -> list[Group]:
        """One group of `group_size` completions per example, requests in parallel."""
        seeds = [int(torch.randint(0, 2**31 - 1, ())) for _ in examples]  # the trainer's RNG
        answers = self.client.map(
            lambda pair: self._request(*pair, group_size, greedy), list(zip(examples, seeds, strict=True))
        )
        return [self._group(example, choices) for example, choices in zip(examples, answers, strict=True)]

    def _request(self, example: Example, seed: int, group_size: int, greedy: bool) -> list[dict]:
        cfg = self.cfg
        extra = {
            "top_k": cfg.top_k or -1,  # vLLM: -1 disables
            "min_tokens": cfg.min_new_tokens,
            "stop_token_ids": stop_ids(self.tokenizer),
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        }
        return self.client.complete(
            [example.prompt_ids],
            n=group_size,
            max_tokens=cfg.max_new_tokens,
            temperature=0.0 if greedy else cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
            logprobs=0,
            extra_body=extra,
        )

    def _group(self, example: Example, choices: list[dict]) -> Group:
        stops = set(stop_ids(self.tokenizer))
        rows, logps = [], []
        for choice in choices:
            logprobs = choice.get("logprobs") or {}
            if not logprobs.get("tokens"):
                raise UserError(
                    "rollout server returned no completion tokens with log-probs",
                    "use a server that honours logprobs and return_tokens_as_token_ids (vLLM, dgrpo serve)",
                )
            tokens = [token_id(t) for t in logprobs["tokens"]]
            values = [math.nan if v is None else float(v) for v in logprobs.get("token_logprobs") or []]
            if len(values) != len(tokens):
                values = [math.nan] * len(tokens)
            if choice.get("finish_reason") == "stop" and (not tokens or tokens[-1] not in stops):
                # a server that drops the stop token from its output: the model must still learn to stop
                tokens, values = tokens + [self.tokenizer.eos_token_id], values + [math.nan]
            rows.append(tokens[: self.cfg.max_new_tokens] or [self.tokenizer.eos_token_id])
            logps.append(values[: len(rows[-1])] or [math.nan])
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        completions = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
        logp = torch.tensor([values + [0.0] * (width - len(values)) for values in logps])
        device = self.device
        group = make_group(
            example, torch.tensor([example.prompt_ids], device=device), completions.to(device), self.tokenizer
        )
        group.logp_sampler = logp.to(device)
        return group
