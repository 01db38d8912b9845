"""Token counts for sizing contexts, and the lengths users ask for.

`--length 32k` means 32,768 tokens of the chosen tokenizer. The default tokenizer is Qwen3's,
embedded and offline (`longblocks.tokenizer`). Counting runs on `tiktoken` (about 5x faster than
a transformers fast tokenizer); the same vocabulary converted to a Hugging Face tokenizer (for
the trainer and for checking) gives identical ids. Any local Hugging Face tokenizer directory works via
`load_counter(path)`; nothing here touches the network.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Protocol

from longblocks.errors import UserError
from longblocks.render import env
from longblocks.tokenizer import (
    CHAT_TEMPLATE,
    MODEL_MAX_LENGTH,
    QWEN3_NAME,
    chat_template_text,
    qwen3_encoding,
)

MIN_LENGTH = 256  # below 1k only small tokenizers fit a question's evidence (toy-scale studies)
MAX_LENGTH = MODEL_MAX_LENGTH
_LENGTH_FIX = "use a number with optional k suffix between 256 and 128k, e.g. 32k"
_LENGTH = re.compile(r"(\d+)(k?)", re.IGNORECASE)

# One of these must exist for a directory to be a tokenizer; checked first for a clear error.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_TOKENIZER_FIX = (
    "pass a local Hugging Face tokenizer directory or omit --tokenizer for the embedded Qwen3 tokenizer"
)


def parse_length(text: str) -> int:
    """`"32k"` -> 32768, `"4096"` -> 4096; integers only, k = 1024, 256..128k inclusive."""
    match = _LENGTH.fullmatch(text.strip())
    if match is None:
        raise UserError(f"length '{text}' is not a token count", _LENGTH_FIX)
    n = int(match[1]) * (1024 if match[2] else 1)
    if not MIN_LENGTH <= n <= MAX_LENGTH:
        raise UserError(f"length '{text}' ({n} tokens) is outside 256..128k", _LENGTH_FIX)
    return n


def parse_lengths(text: str) -> list[int]:
    """`"4k,32k"` -> [4096, 32768], in the given order; empty items and repeats are errors."""
    lengths: list[int] = []
    for item in text.split(","):
        if not item.strip():
            raise UserError(
                f"lengths '{text}' contain an empty item",
                "separate lengths with single commas, e.g. 4k,32k",
            )
        n = parse_length(item)
        if n in lengths:
            raise UserError(f"lengths '{text}' repeat {item.strip()}", "list each length once")
        lengths.append(n)
    return lengths


class TokenCounter(Protocol):
    """Exact token counts of one tokenizer; special-token strings count as one token each."""

    name: str  # recorded in each row: "qwen3" or the tokenizer's path

    def count(self, text: str) -> int: ...
    def count_batch(self, texts: list[str]) -> list[int]: ...
    def encode(self, text: str) -> list[int]: ...
    def chat_prompt(self, messages: list[dict[str, str]]) -> str: ...


class TiktokenCounter:
    """The embedded Qwen3 tokenizer on tiktoken.

    Must equal `len(build_qwen3_tokenizer()(text, add_special_tokens=False)["input_ids"])`.
    Holds no state besides its name, so it pickles to worker processes for free; the Encoding
    comes from the per-process `qwen3_encoding()` cache.
    """

    name = QWEN3_NAME

    def encode(self, text: str) -> list[int]:
        # NFC first: the HF tokenizer normalises and tiktoken does not, and decomposed
        # accents (e + U+0301) would otherwise split into more tokens.
        text = unicodedata.normalize("NFC", text)
        if "<" not in text:
            # Every added token starts with "<": without one, plain BPE gives the same ids and
            # skips the special-token scan (the sizer counts many small pieces).
            return qwen3_encoding().encode_ordinary(text)
        return qwen3_encoding().encode(text, allowed_special="all")

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_batch(self, texts: list[str]) -> list[int]:
        # A plain loop, not encode_batch's thread pool: the generator already runs one
        # process per core, and more threads would only oversubscribe them.
        return [self.count(text) for text in texts]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return env.render(CHAT_TEMPLATE, messages=messages, add_generation_prompt=True)

    def __repr__(self) -> str:
        return "TiktokenCounter()"


class HFCounter:
    """Any local Hugging Face tokenizer directory; pickles as its path (reloaded in workers)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.name = path
        if self.tokenizer.chat_template is None:
            self.tokenizer.chat_template = chat_template_text()

    def encode(self, text: str) -> list[int]:
        return self._encode_batch([text])[0]

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:  # transformers 5 raises IndexError on an empty batch
            return []
        # verbose=False: a whole 128k context is longer than many model_max_length values,
        # and we are counting, not feeding a model.
        return self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def count_batch(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self._encode_batch(texts)]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __reduce__(self):
        return (HFCounter, (self.path,))

    def __repr__(self) -> str:
        return f"HFCounter({self.path!r})"


def load_counter(path: str | None) -> TokenCounter:
    """None or "qwen3" -> the embedded tokenizer; a local directory -> its HF tokenizer."""
    if path is None or path == QWEN3_NAME:
        return TiktokenCounter()
    # Only a directory: anything else could be read as a Hub repo id.
    if not Path(path).is_dir():
        reason = "no such directory" if not Path(path).exists() else "not a directory"
        raise UserError(f"cannot load tokenizer from '{path}': {reason}", _TOKENIZER_FIX)
    if not any((Path(path) / name).is_file() for name in _TOKENIZER_FILES):
        reason = f"no {' / '.join(_TOKENIZER_FILES)} in it"
        raise UserError(f"cannot load tokenizer from '{path}': {reason}", _TOKENIZER_FIX)
    try:
        return HFCounter(path)
    except Exception as err:  # transformers raises OSError, ValueError, TypeError, ...
        lines = str(err).strip().splitlines()
        reason = lines[0].rstrip(" :") if lines else type(err).__name__
        raise UserError(f"cannot load tokenizer from '{path}': {reason[:200]}", _TOKENIZER_FIX) from err
