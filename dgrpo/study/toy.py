"""A toy task every method learns in seconds on a CPU: find the colour word among filler words.

Each prompt holds one colour among filler words; the right response is `Answer: <colour>`,
which the word-level vocabulary holds as one token, so a one-token completion is scored by
longblocks.rewards like any other response (exact match on the answer line). A random model
finds it with probability ~1/V, so GRPO groups see rewards from the first step. The learning
tests (tests/dgrpo/test_learning.py) and `make demo` train on it.
"""

import random
from pathlib import Path

import datasets
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from dgrpo.study.assets import SPECIAL_TOKENS, save_tokenizer

COLOURS = ("red", "blue", "green", "gold")
FILLERS = ("ash", "bay", "cob", "dew", "elm", "fig")
WORDS = (*COLOURS, *FILLERS, "colour", "say")
ANSWERS = tuple(f"Answer: {colour}" for colour in COLOURS)
ARCH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8)  # fmt: skip


def make_tokenizer(out_dir: Path):
    """Word-level: the chat markers, the words, and each `Answer: <colour>` line as one token."""
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
