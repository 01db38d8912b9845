"""Runs and exact measurements on the toy task of `dgrpo.study.toy`.

Completions are one token, so the expected reward, the NLL and the KLs to a teacher are exact
functions of the next-token distribution at the prompt's end: the tests measure those, with no
sampling noise.
"""

import itertools
import json
from pathlib import Path

import torch

from dgrpo.config import DataConfig
from dgrpo.data import prepare
from dgrpo.models import load_model, load_tokenizer
from dgrpo.study.assets import save_model
from dgrpo.study.toy import ARCH, make_dataset, make_tokenizer
from tests.dgrpo.reference import dense_reverse_kl

__all__ = ["Probe", "first_last", "make_dataset", "make_model", "make_tokenizer", "metrics", "run_values"]


def make_model(out_dir: Path, tokenizer, seed: int) -> Path:
    save_model(out_dir, tokenizer, ARCH, seed)
    return out_dir


def run_values(
    data_dir: Path, student: Path, out: Path, method: str, teacher: Path | None = None, **sections
):
    """A short single-threaded run on the toy task: one-token completions scored as they are."""
    values = {
        "model": {"student": str(student), "gradient_checkpointing": False},
        "data": {"path": str(data_dir), "batch_size": 4},
        "rollout": {"group_size": 8, "max_new_tokens": 1, "truncation": "score"},
        "teacher": {"model": str(teacher) if teacher else None, "top_k": 8},
        "loss": {"method": method},
        "optim": {"lr": 2e-2, "schedule": "constant", "warmup_steps": 0},
        "run": {"out_dir": str(out), "steps": 30, "save_every": 0, "progress": False, "threads": 1,
                "device": "cpu"},
    }  # fmt: skip
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return values


class Probe:
    """Exact next-token statistics of a model on a split's prompts (eval mode, no sampling)."""

    def __init__(self, data: Path, model_dir: Path, split: str = "validation"):
        tokenizer = load_tokenizer(str(model_dir))
        cfg = DataConfig(path=str(data))
        self.examples = prepare(cfg, tokenizer, split, with_response=False, with_verification=True).examples
        self.answer_ids = torch.tensor(
            [tokenizer.convert_tokens_to_ids(f"Answer: {ex.verification['answer']}") for ex in self.examples]
        )
        self.eos = tokenizer.eos_token_id

    @torch.no_grad()
    def logits(self, model_dir) -> torch.Tensor:
        """[N, 2, V]: logits at the prompt's end and after the right answer token."""
        model = load_model(str(model_dir)).eval()
        rows = [
            model(torch.tensor([[*ex.prompt_ids, int(answer)]])).logits[0, -2:]
            for ex, answer in zip(self.examples, self.answer_ids, strict=True)
        ]
        return torch.stack(rows).double()

    def expected_reward(self, model_dir) -> float:
        """Mean probability of the right one-token answer: the exact expected reward."""
        logp = torch.log_softmax(self.logits(model_dir)[:, 0], -1)
        return logp.gather(1, self.answer_ids[:, None]).exp().mean().item()

    def nll(self, model_dir) -> float:
        """Mean NLL of the reference response (answer token, then EOS)."""
        logp = torch.log_softmax(self.logits(model_dir), -1)
        first = logp[:, 0].gather(1, self.answer_ids[:, None]).squeeze(1)
        return -(first + logp[:, 1, self.eos]).mean().item()

    def kl(self, student_dir, teacher_dir, reverse: bool = True) -> float:
        """Mean exact KL at the prompt's end: reverse D(π_θ‖π_T) or forward D(π_T‖π_θ)."""
        s, t = self.logits(student_dir)[:, 0], self.logits(teacher_dir)[:, 0]
        return (dense_reverse_kl(s, t) if reverse else dense_reverse_kl(t, s)).mean().item()


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def first_last(values: list[float], n: int = 3) -> tuple[float, float]:
    return sum(values[:n]) / n, sum(itertools.islice(reversed(values), n)) / n
