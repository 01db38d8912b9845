"""Tests for longblocks.render.sizing: lengths, the embedded Qwen3 tokenizer, the counters."""

import pickle
import unicodedata

import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from longblocks import tokenizer as embedded
from longblocks.errors import UserError
from longblocks.render.sizing import (
    HFCounter,
    TiktokenCounter,
    load_counter,
    parse_length,
    parse_lengths,
)
from longblocks.tokenizer import build_qwen3_tokenizer, save_qwen3_tokenizer

SPECIAL_IDS = {
    151643: "<|endoftext|>",
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151646: "<|object_ref_start|>",
    151647: "<|object_ref_end|>",
    151648: "<|box_start|>",
    151649: "<|box_end|>",
    151650: "<|quad_start|>",
    151651: "<|quad_end|>",
    151652: "<|vision_start|>",
    151653: "<|vision_end|>",
    151654: "<|vision_pad|>",
    151655: "<|image_pad|>",
    151656: "<|video_pad|>",
    151657: "<tool_call>",
    151658: "</tool_call>",
    151659: "<|fim_prefix|>",
    151660: "<|fim_middle|>",
    151661: "<|fim_suffix|>",
    151662: "<|fim_pad|>",
    151663: "<|repo_name|>",
    151664: "<|file_sep|>",
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
}
NOT_SKIPPED = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"}
NOT_SKIPPED |= {"<think>", "</think>"}
SYSTEM_USER = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
SYSTEM_USER_PROMPT = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
# Text without surrogates (neither tokenizer can encode a lone one the same way).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)


def faker_texts(locale: str, seed: int, n: int) -> list[str]:
    fake = Faker(locale)
    fake.seed_instance(seed)
    return [fake.paragraph(nb_sentences=4) for _ in range(n)]


def faker_sentences(locale: str, seed: int, n: int) -> list[str]:
    fake = Faker(locale)
    fake.seed_instance(seed)
    return [fake.sentence(nb_words=8) for _ in range(n)]


CORPUS = [
    *faker_texts("en_US", 1, 20),
    *faker_texts("pt_BR", 2, 20),
    *faker_texts("de_DE", 3, 20),
    "\n\n".join(faker_texts("en_US", 4, 10)),
    "Born 1987-03-14, paid $1,234,567.89 (≈ 3.14159e10) on 2024/12/31 at 23:59:07.",
    "!!! ??? ... ,,, ;;; --- ___ ''' \"\"\" ((())) [[[]]] {{{}}} <<<>>> @#$%^&*~`|\\/",
    "line one\nline two\r\nline three\n\n\n\tindented\t\ttabs\n   \n",
    "many     spaces   between      words   and trailing     ",
    "emoji 😀🎉👩‍👩‍👧‍👦 flags 🇧🇷🇩🇪 mixed 漢字 かな Ελληνικά русский العربية",
    "decomposed: Sa\u0303o Jose\u0301, Mu\u0308nchen, Franc\u0327a, ca\u0301fe\u0301",
    "Ångström ﬁ ligature ＦＵＬＬ width Ⅻ roman ½ ² ℃",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nx\n</think>\n\nok",
    "<|endoftext|><|endoftext|>x<tool_call>{}</tool_call><|fim_prefix|>a<|file_sep|>b",
    "<|im_start <im_end|> <|im_end> not quite special",
    "",
    " ",
]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """Build into a throwaway cache, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("longblocks-cache")
        mp.setenv("LONGBLOCKS_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def hf_tokenizer(cache_dir):
    return build_qwen3_tokenizer()


@pytest.fixture(scope="module")
def saved_dir(hf_tokenizer, tmp_path_factory):
    return save_qwen3_tokenizer(tmp_path_factory.mktemp("qwen3-tokenizer"))


@pytest.fixture(scope="module")
def counters(saved_dir) -> dict[str, object]:
    """Both counters, loaded once: an HF tokenizer load takes about a second."""
    return {"tiktoken": load_counter(None), "hf": load_counter(str(saved_dir))}


def hf_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- lengths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("32k", 32768), ("32K", 32768), ("4096", 4096), ("1k", 1024), ("256", 256), ("128k", 131072)],
)
def test_parse_length_values(text, tokens):
    assert parse_length(text) == tokens


@pytest.mark.parametrize(
    "text", ["3x", "", "k", "1.5k", "-4k", "32kk", "32 k", "0", "255", "128k1", "129k", "131073"]
)
def test_parse_length_rejects(text):
    with pytest.raises(UserError) as err:
        parse_length(text)
    assert f"'{text}'" in err.value.problem
    assert "between 256 and 128k" in err.value.fix
    assert "\n" not in str(err.value)


def test_parse_lengths_keeps_order():
    assert parse_lengths("32k,4k") == [32768, 4096]
    assert parse_lengths("4k") == [4096]


@pytest.mark.parametrize(("text", "word"), [("4k,,8k", "empty"), ("4k,", "empty")])
def test_parse_lengths_rejects_empty_items(text, word):
    with pytest.raises(UserError, match=word):
        parse_lengths(text)


def test_parse_lengths_rejects_duplicates_and_bad_items():
    with pytest.raises(UserError, match="repeat"):
        parse_lengths("4k,4096")
    with pytest.raises(UserError, match="'3x'"):
        parse_lengths("4k,3x")


# --- the embedded tokenizer ------------------------------------------------------------------


def test_vocabulary_and_special_ids(hf_tokenizer):
    assert len(hf_tokenizer) == 151669
    assert len(hf_tokenizer.get_vocab()) == 151669
    assert hf_tokenizer.vocab_size == 151643  # ranks only, as Qwen3 reports it
    assert {i: hf_tokenizer.convert_ids_to_tokens(i) for i in SPECIAL_IDS} == SPECIAL_IDS
    assert embedded.qwen3_encoding().n_vocab == 151669
    assert hf_tokenizer.eos_token == "<|im_end|>"
    assert hf_tokenizer.pad_token == "<|endoftext|>"
    assert hf_tokenizer.model_max_length == 131072


def test_skip_special_tokens_keeps_think_and_tool_markers(hf_tokenizer):
    text = "".join(SPECIAL_IDS.values())
    ids = hf_ids(hf_tokenizer, text)
    assert ids == list(SPECIAL_IDS)
    kept = hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert kept == "".join(t for t in SPECIAL_IDS.values() if t in NOT_SKIPPED)


def test_hf_ids_identical_to_tiktoken(hf_tokenizer):
    counter = TiktokenCounter()
    for text in CORPUS:
        assert hf_ids(hf_tokenizer, text) == counter.encode(text), text


@settings(max_examples=300, deadline=None)
@given(text=TEXT)
def test_hf_ids_identical_to_tiktoken_on_any_text(hf_tokenizer, text):
    assert hf_ids(hf_tokenizer, text) == TiktokenCounter().encode(text)


def test_special_token_strings_count_once():
    counter = TiktokenCounter()
    assert counter.encode("<|im_start|>") == [151644]
    assert counter.count("a<|im_end|>b") == 3


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(TEXT, st.sampled_from(CORPUS)))
def test_plain_text_shortcut_equals_special_aware_encoding(text):
    """Text without "<" skips tiktoken's special-token scan; the ids must not change."""
    full = embedded.qwen3_encoding().encode(unicodedata.normalize("NFC", text), allowed_special="all")
    assert TiktokenCounter().encode(text) == full


def test_nfc_decomposed_accents_count_like_composed():
    counter = TiktokenCounter()
    composed, decomposed = "São José, München", "Sa\u0303o Jose\u0301, Mu\u0308nchen"
    assert unicodedata.normalize("NFC", decomposed) == composed
    assert counter.encode(decomposed) == counter.encode(composed)


def test_decode_round_trips_to_nfc(hf_tokenizer):
    for text in CORPUS:
        decoded = hf_tokenizer.decode(hf_ids(hf_tokenizer, text))
        assert decoded == unicodedata.normalize("NFC", text)


def test_second_build_comes_from_the_disk_cache(hf_tokenizer, cache_dir):
    cached = list(cache_dir.glob("qwen3-tokenizer-*/tokenizer.json"))
    assert len(cached) == 1
    assert not list(cache_dir.rglob("*.tmp"))  # atomic write left no temp file behind
    again = build_qwen3_tokenizer()
    assert hf_ids(again, CORPUS[0]) == hf_ids(hf_tokenizer, CORPUS[0])


def test_saved_tokenizer_round_trips(hf_tokenizer, saved_dir):
    loaded = AutoTokenizer.from_pretrained(str(saved_dir), local_files_only=True)
    assert len(loaded) == 151669
    for text in CORPUS:
        assert hf_ids(loaded, text) == hf_ids(hf_tokenizer, text)
    for tok in (loaded, hf_tokenizer):
        rendered = tok.apply_chat_template(SYSTEM_USER, tokenize=False, add_generation_prompt=True)
        assert rendered == SYSTEM_USER_PROMPT


# --- counters --------------------------------------------------------------------------------


def test_hf_counter_counts_equal_tiktoken_counter(counters, saved_dir):
    hf, tk = counters["hf"], counters["tiktoken"]
    assert isinstance(hf, HFCounter)
    assert isinstance(tk, TiktokenCounter)
    assert hf.name == str(saved_dir)
    assert tk.name == "qwen3"
    assert isinstance(load_counter("qwen3"), TiktokenCounter)
    assert hf.count_batch(CORPUS) == tk.count_batch(CORPUS)
    assert [hf.encode(t) for t in CORPUS] == [tk.encode(t) for t in CORPUS]


@pytest.mark.parametrize("kind", ["tiktoken", "hf"])
def test_count_batch_equals_count(kind, counters):
    counter = counters[kind]
    assert counter.count_batch(CORPUS) == [counter.count(t) for t in CORPUS]
    assert counter.count_batch([]) == []


@pytest.mark.parametrize("kind", ["tiktoken", "hf"])
def test_chat_prompt(kind, counters):
    counter = counters[kind]
    assert counter.chat_prompt(SYSTEM_USER) == SYSTEM_USER_PROMPT
    history = [
        *SYSTEM_USER,
        {"role": "assistant", "content": "<think>\nplan\n</think>\n\nA"},
        {"role": "user", "content": "V"},
    ]
    expected = SYSTEM_USER_PROMPT + "A<|im_end|>\n<|im_start|>user\nV<|im_end|>\n"
    assert counter.chat_prompt(history) == expected + "<|im_start|>assistant\n"


def test_chat_template_without_thinking(hf_tokenizer):
    rendered = hf_tokenizer.apply_chat_template(
        SYSTEM_USER, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert rendered == SYSTEM_USER_PROMPT + "<think>\n\n</think>\n\n"
    assert (
        hf_tokenizer.apply_chat_template(SYSTEM_USER, tokenize=False)
        == SYSTEM_USER_PROMPT[: -len("<|im_start|>assistant\n")]
    )


def test_hf_counter_falls_back_to_qwen3_template(hf_tokenizer, tmp_path):
    hf_tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    counter = load_counter(str(tmp_path))  # a bare tokenizer.json: no chat template
    assert counter.chat_prompt(SYSTEM_USER) == SYSTEM_USER_PROMPT


@pytest.mark.parametrize("kind", ["tiktoken", "hf"])
def test_counters_pickle(kind, counters):
    counter = counters[kind]
    clone = pickle.loads(pickle.dumps(counter))
    assert clone.name == counter.name
    assert clone.count_batch(CORPUS) == counter.count_batch(CORPUS)


def test_load_counter_errors(tmp_path):
    (tmp_path / "file.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("not json")
    for name in ["missing", "file.json", "empty", "broken"]:
        path = str(tmp_path / name)
        with pytest.raises(UserError) as err:
            load_counter(path)
        assert err.value.problem.startswith(f"cannot load tokenizer from '{path}': ")
        assert "--tokenizer" in err.value.fix
        assert "\n" not in str(err.value)


# --- additivity the context filler relies on -------------------------------------------------

SENTENCES = [
    *faker_sentences("en_US", 11, 40),
    *faker_sentences("pt_BR", 12, 40),
    *faker_sentences("de_DE", 13, 40),
]


def test_sentences_after_a_full_stop_are_additive():
    counter = TiktokenCounter()
    for s1, s2 in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True):
        assert s1.endswith(".")
        assert s2[0].isalpha()
        rest = " " + s2
        assert counter.count(s1 + rest) == counter.count(s1) + counter.count(rest)


def test_blocks_split_at_paragraph_break_and_bracket_are_additive():
    counter = TiktokenCounter()
    blocks = [f"[{i}] {text}.\n\n" for i, text in enumerate(faker_texts("de_DE", 14, 30))]
    for b1, b2 in zip(blocks, blocks[1:], strict=False):
        assert counter.count(b1 + b2) == counter.count(b1) + counter.count(b2)
    assert counter.count("".join(blocks)) == sum(counter.count_batch(blocks))


@settings(max_examples=300, deadline=None)
@given(
    head=TEXT,
    letter=st.characters(categories=("Lu", "Ll", "Lo")),
    tail=TEXT,
)
def test_additivity_holds_for_any_text(head, letter, tail):
    counter = TiktokenCounter()
    s1, rest = head + ".", " " + letter + tail
    assert counter.count(s1 + rest) == counter.count(s1) + counter.count(rest)
    b1, b2 = head + ".\n\n", "[" + tail
    assert counter.count(b1 + b2) == counter.count(b1) + counter.count(b2)
