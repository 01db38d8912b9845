"""Loading the student, teacher and reference models and their tokenizer.

A model source is a local Hugging Face directory (never the Hub: `local_files_only`), a dgrpo
run directory (its latest checkpoint), or an embedded tiny Qwen3-architecture model built from
a config so every command runs offline. Tiny models use the embedded Qwen3 tokenizer
(`longblocks.tokenizer`, the one longblocks datasets are sized with) and Qwen3's padded
embedding size, so they exercise the same vocabulary-sized code paths as real Qwen3 models.
"""

import logging
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cache, partial
from pathlib import Path

import torch
import transformers

from dgrpo.errors import UserError

log = logging.getLogger(__name__)

TINY_VOCAB = 151936  # Qwen3's embedding rows: its 151,669 tokens padded up to a multiple of 128
_TINY_COMMON = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
TINY_MODELS: dict[str, dict] = {
    "tiny-qwen3": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, **_TINY_COMMON),
    # The student's architecture, twice as deep (the benchmarks compare against this teacher).
    "tiny-qwen3-teacher": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, **_TINY_COMMON),
}
_SOURCE_FIX = (
    f"use a local Hugging Face model directory, a dgrpo run directory or one of {', '.join(TINY_MODELS)}"
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_source(source: str) -> str:
    """A tiny name as is; a run directory -> its newest checkpoint; else an existing directory."""
    if source in TINY_MODELS:
        return source
    path = Path(source)
    checkpoints = sorted((path / "checkpoints").glob("step-*")) if path.is_dir() else []
    if checkpoints:
        return str(checkpoints[-1])
    if not (path / "config.json").is_file():
        reason = "no such directory" if not path.exists() else "no config.json in it"
        raise UserError(f"cannot load model '{source}': {reason}", _SOURCE_FIX)
    return source


@cache
def embedded_tokenizer():
    """The offline Qwen3 tokenizer shipped with longblocks (built once per process)."""
    from longblocks.tokenizer import build_qwen3_tokenizer

    return build_qwen3_tokenizer()


def load_tokenizer(source: str):
    """The tokenizer of a model source; a pad token is set to EOS when the tokenizer has none."""
    source = resolve_source(source)
    if source in TINY_MODELS:
        tokenizer = embedded_tokenizer()
    else:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception as err:  # transformers raises OSError, ValueError, TypeError, ...
            raise UserError(
                f"cannot load the tokenizer of '{source}': {_first_line(err)}", _SOURCE_FIX
            ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, *, seed: int = 0, dtype: str = "float32") -> transformers.PreTrainedModel:
    """A causal LM from a model source; tiny models are initialised from `seed`."""
    transformers.utils.logging.disable_progress_bar()
    source = resolve_source(source)
    if source in TINY_MODELS:
        return build_tiny(source, seed).to(DTYPES[dtype])
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(
            source, local_files_only=True, dtype=DTYPES[dtype]
        )
    except Exception as err:
        raise UserError(f"cannot load model '{source}': {_first_line(err)}", _SOURCE_FIX) from err


def build_tiny(name: str, seed: int) -> transformers.Qwen3ForCausalLM:
    """An embedded tiny Qwen3 model, randomly initialised from `seed` (global RNG untouched)."""
    tokenizer = embedded_tokenizer()
    config = transformers.Qwen3Config(
        vocab_size=TINY_VOCAB,
        max_position_embeddings=131072,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        **TINY_MODELS[name],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transformers.Qwen3ForCausalLM(config)


def save_embedded(name: str, out: Path, seed: int = 0) -> Path:
    """Write the embedded tiny model `name` (initialised from `seed`, as `model.student=name`
    with run.seed=seed would be) and the embedded tokenizer, chat template included, to the new
    folder `out`: a Hugging Face directory any library loads with `from_pretrained(out)`.
    Written to a temporary sibling and renamed, so a failure leaves nothing behind."""
    if name not in TINY_MODELS:
        raise UserError(f"no embedded model '{name}'", f"choose one of {', '.join(TINY_MODELS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty", "choose a new folder")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_tiny(name, seed).save_pretrained(tmp)
        embedded_tokenizer().save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # an empty folder the user made for us
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare_for_training(model: transformers.PreTrainedModel, gradient_checkpointing: bool) -> None:
    """Train mode, and non-reentrant activation checkpointing if asked: group_forward needs the
    gradient to reach the shared prompt K/V, which reentrant checkpointing would cut."""
    model.train()
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def freeze(model: transformers.PreTrainedModel) -> transformers.PreTrainedModel:
    """Eval mode and no parameter gradients (teacher, reference)."""
    model.eval()
    model.requires_grad_(False)
    return model


def pick_device(name: str) -> torch.device:
    """run.device: auto -> cuda when available, else cpu; cuda without a GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device is cuda but no CUDA device is available", "set run.device to auto or cpu")
    return torch.device(
        "cuda" if name == "auto" and torch.cuda.is_available() else name if name != "auto" else "cpu"
    )


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has fast bf16 matmul kernels (CUDA with bf16; a CPU with AVX512, where
    oneDNN runs them). Other CPUs fall back to PyTorch's reference GEMM: a bf16-autocast step of
    the study's reader took 9.9x the float32 time on an AVX2 EPYC (25.5 s against 2.6 s;
    bench/reader_step.py)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast_factory(device: torch.device, mode: str) -> Callable[[], AbstractContextManager]:
    """A context factory for bf16 autocast of decoder forwards (run.autocast); the chunked head
    runs outside it in float32."""
    enabled = mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    if mode == "bf16" and not native_bf16(device):
        log.warning("run.autocast=bf16 on a %s without native bf16 matmul: expect several times the "
                    "float32 step time (set run.autocast=off)", device.type)  # fmt: skip
    return partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=enabled)


def check_compatible(student_tokenizer, other_tokenizer, student, other, role: str = "teacher") -> None:
    """Student and teacher (or reference) must share token ids, or KL and log-probs compare
    different tokens. Embeddings may differ in size by padding; the other's must cover the student's."""
    mine, theirs = student_tokenizer.get_vocab(), other_tokenizer.get_vocab()
    if mine != theirs:
        differing = sorted(set(mine.items()) ^ set(theirs.items()), key=lambda item: item[1])
        example = f"; e.g. token {differing[0][0]!r}" if differing else ""
        raise UserError(
            f"{role} tokenizer differs from the student's ({len(theirs)} vs {len(mine)} tokens{example})",
            f"use a {role} with the student's tokenizer (same vocabulary and special tokens)",
        )
    for name in ("eos_token", "pad_token", "bos_token", "all_special_tokens"):
        mine, theirs = getattr(student_tokenizer, name), getattr(other_tokenizer, name)
        if isinstance(mine, list):  # the same special tokens, in any order
            mine, theirs = sorted(mine), sorted(theirs)
        if mine != theirs:
            raise UserError(
                f"{role} {name} {theirs!r} differs from the student's {mine!r}",
                f"use a {role} with the student's tokenizer (same vocabulary and special tokens)",
            )
    rows, other_rows = _vocab_rows(student), _vocab_rows(other)
    if other_rows < rows or rows < len(student_tokenizer):
        raise UserError(
            f"embedding sizes do not fit: student {rows} rows, {role} {other_rows}, tokenizer "
            f"{len(student_tokenizer)} tokens",
            f"the {role}'s embedding must have at least as many rows as the student's, and both at "
            "least one per token",
        )


def _vocab_rows(model: transformers.PreTrainedModel) -> int:
    return model.get_output_embeddings().weight.shape[0]


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0].rstrip(" :") if lines else type(err).__name__)[:200]
