"""A toy task the five methods can learn in seconds: find the colour word among filler words.

Each prompt holds one colour among filler words; the right answer is `Answer: <colour>`, which
the word-level vocabulary holds as one token, so a one-token completion is scored by
longblocks.rewards like any other response. A random model finds it with probability ~1/V,
enough for GRPO groups to see rewards from the start. Since completions are one token, the
expected reward, the NLL and the KLs to a teacher are exact functions of the next-token
distribution at the prompt's end: the tests measure those, with no sampling noise.
"""

import itertools
import json
import random
from pathlib import Path

import datasets
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from dgrpo.config import DataConfig
from dgrpo.data import prepare
from dgrpo.models import load_model, load_tokenizer
from dgrpo.study.assets import SPECIAL_TOKENS, save_model, save_tokenizer

COLOURS = ("red", "blue", "green", "gold")
FILLERS = ("ash", "bay", "cob", "dew", "elm", "fig")
WORDS = (*COLOURS, *FILLERS, "colour", "say")
ANSWERS = tuple(f"Answer: {colour}" for colour in COLOURS)
ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8)  # fmt: skip


def make_tokenizer(out_dir: Path):
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.add_tokens([AddedToken(answer, normalized=False) for answer in ANSWERS])
    return save_tokenizer(tokenizer, out_dir)


def make_rows(seed: int, n: int, say: str | None = None) -> list[dict]:
    """n prompts: one colour at a random place among 3 random fillers. With `say`, every
    reference answers that colour (a teacher trained on them is confidently wrong 3 times in 4)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour = COLOURS[i % len(COLOURS)]
        words = [rng.choice(FILLERS) for _ in range(3)]
        words.insert(rng.randrange(4), colour)
        rows.append({"id": f"{seed}-{i}", "document": " ".join(words), "question": "colour",
                     "instruction": "say", "answer": colour, "task": "toy",
                     "reference": f"Answer: {say or colour}"})  # fmt: skip
    return rows


def make_dataset(out_dir: Path, say: str | None = None) -> Path:
    """train: 64 prompts; validation: 32 others (a filler arrangement never seen in train)."""
    train = make_rows(0, 64, say)
    seen = {row["document"] for row in train}
    held_out = [row for row in make_rows(1, 200) if row["document"] not in seen][:32]
    splits = {"train": train, "validation": held_out}
    datasets.disable_progress_bars()
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(out_dir)
    return out_dir


def make_model(out_dir: Path, tokenizer, seed: int) -> Path:
    save_model(out_dir, tokenizer, ARCH, seed)
    return out_dir


def run_values(
    data_dir: Path, student: Path, out: Path, method: str, teacher: Path | None = None, **sections
):  # noqa: E501
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
        from dgrpo.losses import reverse_kl_full

        s, t = self.logits(student_dir)[:, 0], self.logits(teacher_dir)[:, 0]
        return (reverse_kl_full(s, t) if reverse else reverse_kl_full(t, s)).mean().item()


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def first_last(values: list[float], n: int = 3) -> tuple[float, float]:
    return sum(values[:n]) / n, sum(itertools.islice(reversed(values), n)) / n
