"""Tiny models build offline; model sources resolve; tokenizer compatibility is enforced."""

import copy
import re

import pytest
import torch
import transformers

from dgrpo.errors import UserError
from dgrpo.models import (
    TINY_VOCAB,
    build_tiny,
    check_compatible,
    embedded_tokenizer,
    load_model,
    load_tokenizer,
    resolve_source,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_tiny_models_build_offline_with_the_qwen3_vocabulary():
    tokenizer = load_tokenizer("tiny-qwen3")
    student, teacher = load_model("tiny-qwen3", seed=0), load_model("tiny-qwen3-teacher", seed=1)
    assert len(tokenizer) == 151669 and tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert student.config.vocab_size == teacher.config.vocab_size == TINY_VOCAB
    assert (student.config.num_hidden_layers, teacher.config.num_hidden_layers) == (2, 4)
    check_compatible(tokenizer, load_tokenizer("tiny-qwen3-teacher"), student, teacher)


def test_tiny_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = build_tiny("tiny-qwen3", 0), build_tiny("tiny-qwen3", 0), build_tiny("tiny-qwen3", 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def save_model(path, model, tokenizer):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_local_directories_and_run_directories_resolve(tmp_path):
    model = build_tiny("tiny-qwen3", 0)
    path = save_model(tmp_path / "model", model, embedded_tokenizer())
    loaded = load_model(path)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert load_tokenizer(path).get_vocab() == embedded_tokenizer().get_vocab()
    run = tmp_path / "run"
    for step in (2, 10):
        save_model(run / "checkpoints" / f"step-{step:06d}", model, embedded_tokenizer())
    assert resolve_source(str(run)).endswith("step-000010")


@pytest.mark.parametrize(("source", "reason"), [("nope", "no such directory"), (".", "no config.json in it")])
def test_unknown_sources_are_user_errors(source, reason):
    with pytest.raises(UserError, match=reason):
        load_model(source)


def tiny_with_vocab(vocab: int) -> transformers.Qwen3ForCausalLM:
    config = transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8,
    )  # fmt: skip
    return transformers.Qwen3ForCausalLM(config)


def test_padded_teacher_embedding_is_allowed_but_a_smaller_one_is_not():
    tokenizer = embedded_tokenizer()
    student = tiny_with_vocab(TINY_VOCAB)
    check_compatible(tokenizer, tokenizer, student, tiny_with_vocab(TINY_VOCAB + 128))
    with pytest.raises(UserError, match="embedding sizes do not fit"):
        check_compatible(tokenizer, tokenizer, student, tiny_with_vocab(TINY_VOCAB - 128))
    with pytest.raises(UserError, match="embedding sizes do not fit"):  # fewer rows than tokens
        check_compatible(tokenizer, tokenizer, tiny_with_vocab(1000), tiny_with_vocab(1000))


def test_tokenizer_mismatch_is_one_clear_error():
    other = copy.deepcopy(embedded_tokenizer())
    other.add_tokens(["<|brand_new|>"])
    student = tiny_with_vocab(TINY_VOCAB)
    with pytest.raises(UserError, match=r"teacher tokenizer differs from the student's \(151670 vs 151669"):
        check_compatible(embedded_tokenizer(), other, student, student)
    changed = copy.deepcopy(embedded_tokenizer())
    changed.eos_token = "<|endoftext|>"
    with pytest.raises(UserError, match=re.escape("reference eos_token '<|endoftext|>' differs")):
        check_compatible(embedded_tokenizer(), changed, student, student, role="reference")
