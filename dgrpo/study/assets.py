"""Small tokenizers and model directories the trainer loads like any local Hugging Face model.

A study at toy scale needs models whose embedding is not the whole parameter budget: a BPE
vocabulary of a few thousand tokens trained on the study's own text, and a Qwen3-architecture
model sized in the config. Both are saved as ordinary HF directories (`model.student` and
`longblocks generate --tokenizer` take their paths), so nothing downstream knows they are small.
"""

from collections.abc import Iterable
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, EOS = "<|pad|>", "<|end|>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = [PAD, EOS, *(f"<|{role}|>" for role in ROLES)]
# Roles as marker tokens, one message per block; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}" + EOS + "\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: Path) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with the chat markers above as special
    tokens, saved to `out_dir` (loadable with AutoTokenizer.from_pretrained)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return save_tokenizer(tokenizer, out_dir)


def save_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> transformers.PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` holding SPECIAL_TOKENS as an HF tokenizer with the chat template."""
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(out_dir)
    return wrapped


def save_model(out_dir: Path, tokenizer, arch: dict, seed: int) -> None:
    """A randomly initialised Qwen3 causal LM (`arch`: hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim) with tied embeddings,
    one row per token (no padding rows a sampler could draw), saved with `tokenizer` to `out_dir`."""
    config = transformers.Qwen3Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=max(4096, arch.get("max_position_embeddings", 0)),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        **{key: value for key, value in arch.items() if key != "max_position_embeddings"},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.Qwen3ForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def parameter_counts(model_dir: Path) -> dict[str, int]:
    """{'total', 'embedding'} parameter counts of a saved model (tied embedding counted once)."""
    config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    embedding = model.get_input_embeddings().weight.numel()
    return {"total": sum(p.numel() for p in model.parameters()), "embedding": embedding}
