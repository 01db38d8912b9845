"""Datasets -> tokenized prompts (and fixed responses), and the resumable batch order.

A dataset is a longblocks DatasetDict directory or anything `datasets.load_dataset` reads;
`data.columns` maps the fields the trainer reads to differently named columns and
`data.defaults` fills fields a dataset lacks, so the published LongBlocks layout (`document`,
`question`, `answer`, `response_<model>`) trains without conversion. The prompt is a jinja2
template for the user message plus the tokenizer's chat template; for longblocks rows the
default reproduces `longblocks.row.prompt_messages` exactly. Rows over the token budget are
skipped and counted, never truncated.
"""

import functools
import hashlib
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import jinja2
from jinja2 import meta, sandbox

from dgrpo.config import DataConfig
from dgrpo.errors import UserError
from longblocks.rewards import exact_match, parse_response

log = logging.getLogger(__name__)

# The answer-line label of each language (templates/<lang>/lexicon.yaml `answer_label`; a
# test keeps them equal); other languages get the English one, which the rewards read too.
ANSWER_LABELS = {"en": "Answer", "pt": "Resposta", "de": "Antwort"}
PREPARE_CHUNK = 256  # rows tokenized per call (memory stays small, the call overhead amortised)
DEFAULT_TEMPLATE = "{{ document }}\n\n{{ question }}\n\n{{ instruction }}"
_ENV = sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True)
class Example:
    """One tokenized row: what rollouts, losses, rewards and evaluation read."""

    index: int  # position in the split
    id: str
    prompt_ids: list[int]  # chat-templated prompt, ending with the assistant generation prompt
    response_ids: list[int] | None  # fixed response + EOS (sft/kd), else None
    verification: dict  # what longblocks.rewards.score needs (kind, answer, aliases, ...)
    task: str
    length: int | None  # the row's length bucket in tokens, when the dataset has one
    depth: float | None  # mean relative evidence depth, when the dataset has one


@dataclass(frozen=True)
class Prepared:
    examples: list[Example]
    skipped_long: int  # prompts over data.max_prompt_tokens
    skipped_response: int  # fixed responses over data.max_response_tokens (sft/kd)


def load_split(cfg: DataConfig, split: str) -> datasets.Dataset:
    """One split of a load_from_disk directory, a local folder of data files, or a Hub name."""
    datasets.disable_progress_bars()
    path = Path(cfg.path)
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            data = datasets.load_from_disk(str(path))
        elif path.is_dir():
            data = _load_local_folder(path, cfg.name)
        else:
            data = datasets.load_dataset(cfg.path, cfg.name)
    except Exception as err:  # datasets raises FileNotFoundError, ValueError, DatasetNotFoundError...
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(
            f"cannot load dataset '{cfg.path}': {reason}",
            "set data.path to a `longblocks generate --out` directory or a datasets name/path",
        ) from err
    if isinstance(data, datasets.Dataset):
        return data
    if split not in data:
        raise UserError(f"dataset '{cfg.path}' has no split '{split}'", f"choose one of {', '.join(data)}")
    return data[split]


def _load_local_folder(path: Path, name: str | None) -> datasets.DatasetDict:
    """A folder of data files (a `longblocks publish --dry-run` tree, parquet or json files) via
    load_dataset, cached under a folder named by the files' content hash. `datasets` keys its
    own cache on the folder's name and the card's file patterns, not on the files, so a folder
    rewritten in place (another dataset published to the same dry-run folder), or another
    folder of the same name, would give rows read before."""
    digest = content_fingerprint(path)
    cache_dir = Path(datasets.config.HF_DATASETS_CACHE) / "dgrpo-local" / digest[:16]
    log.info("data: %s, content sha256 %s", path, digest[:16])
    # resolved: load_dataset(".") takes "." for a Hub name and fails
    return datasets.load_dataset(str(path.resolve()), name, cache_dir=str(cache_dir))


def content_fingerprint(folder: Path) -> str:
    """sha256 over every file's relative path and bytes (hidden files and folders skipped)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def prepare(
    cfg: DataConfig, tokenizer, split: str, *, with_response: bool, with_verification: bool
) -> Prepared:
    """Tokenize a split's prompts (and fixed responses), skipping and counting over-long rows."""
    dataset = load_split(cfg, split)
    template = _prompt_template(cfg)
    needed = set(meta.find_undeclared_variables(_ENV.parse(template))) | {"document", "question"}
    needed |= {cfg.response_field} if with_response else set()
    _check_fields(dataset, cfg, needed, split, need_answer=with_verification)
    rows = dataset if cfg.max_examples is None else dataset.select(range(min(cfg.max_examples, len(dataset))))
    examples, skipped_long, skipped_response = [], 0, 0
    for start, chunk in _chunks(rows, PREPARE_CHUNK):
        fields = [row_fields(row, cfg) for row in chunk]
        texts = [chat_text(prompt_messages(f, template), tokenizer, cfg) for f in fields]
        prompts = _encode(texts, tokenizer)
        fits = [len(ids) <= cfg.max_prompt_tokens for ids in prompts]
        skipped_long += fits.count(False)
        wanted = zip(fields, fits, strict=True)
        targets = [response_text(f, cfg) if fit and with_response else None for f, fit in wanted]
        responses = _encode([t or "" for t in targets], tokenizer) if with_response else [None] * len(fields)
        for offset, (row, prompt_ids, fit, target, response_ids) in enumerate(
            zip(fields, prompts, fits, targets, responses, strict=True)
        ):
            if not fit:
                continue
            if with_response:
                response_ids = [*response_ids, tokenizer.eos_token_id]
                if target is None or len(response_ids) > cfg.max_response_tokens:
                    skipped_response += 1
                    continue
            examples.append(_example(start + offset, row, prompt_ids, response_ids))
    if skipped_long or skipped_response:
        log.warning(
            "split %s: skipped %d rows over data.max_prompt_tokens=%d, %d responses over "
            "data.max_response_tokens=%d or stating another answer (data.append_answer_line)",
            split, skipped_long, cfg.max_prompt_tokens, skipped_response, cfg.max_response_tokens,
        )  # fmt: skip
    if not examples:
        raise UserError(
            f"no usable rows in split '{split}' of '{cfg.path}' ({skipped_long} over max_prompt_tokens)",
            "raise data.max_prompt_tokens or use a dataset with shorter prompts",
        )
    return Prepared(examples, skipped_long, skipped_response)


def row_fields(row: dict, cfg: DataConfig) -> dict:
    """Field name -> value: data.defaults, overridden by the row's columns (all of them, so a
    template may use any), overridden by the data.columns mapping."""
    fields = {**cfg.defaults, **{name: value for name, value in row.items() if value is not None}}
    for name, column in cfg.columns.items():
        if row.get(column) is not None:
            fields[name] = row[column]
    return fields


def response_text(fields: dict, cfg: DataConfig) -> str | None:
    """The fixed response sft/kd train on; with data.append_answer_line, it ends with an answer
    line the rewards read (see the field's description), or None for a response that already
    states another answer: the appended line would make it a hedge, and it demonstrates a wrong
    answer anyway."""
    response = fields[cfg.response_field]
    if not cfg.append_answer_line:
        return response
    answer = str(fields.get("answer", "")).strip()
    if not answer:
        raise UserError(
            f"data.append_answer_line needs an answer, but row '{fields.get('id', '?')}' has none",
            "map the answer column with data.columns.answer=<column>",
        )
    parsed = parse_response(response)
    if parsed.status == "ok":
        return response if exact_match(parsed.answer, answer) else None
    label = ANSWER_LABELS.get(str(fields.get("language", "en")).split("-")[0].lower(), "Answer")
    return f"{response.rstrip()}\n{label}: {answer}"


@functools.lru_cache(maxsize=16)
def compiled(template: str) -> jinja2.Template:
    """The prompt template, compiled once: compiling it for every row took a third of the time
    spent preparing a split."""
    return _ENV.from_string(template)


def prompt_messages(fields: dict, template: str = DEFAULT_TEMPLATE) -> list[dict[str, str]]:
    """Chat messages: the system field (when there is one) and the rendered user message."""
    user = compiled(template).render(**fields)
    system = [{"role": "system", "content": fields["system"]}] if fields.get("system") else []
    return [*system, {"role": "user", "content": user}]


def chat_text(messages: list[dict[str, str]], tokenizer, cfg: DataConfig) -> str:
    """The chat-templated prompt, ending with the assistant generation prompt."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **cfg.chat_template_kwargs
    )


def tokenize_prompt(messages: list[dict[str, str]], tokenizer, cfg: DataConfig) -> list[int]:
    """Token ids of the chat-templated prompt, ending with the assistant generation prompt."""
    return tokenizer(chat_text(messages, tokenizer, cfg), add_special_tokens=False)["input_ids"]


def _encode(texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids of each text, in one call: a fast tokenizer encodes a batch on every core."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _chunks(rows: Iterable[dict], size: int) -> Iterator[tuple[int, list[dict]]]:
    """(position of the first row, up to `size` rows) in order."""
    chunk, start = [], 0
    for index, row in enumerate(rows):
        chunk.append(row)
        if len(chunk) == size:
            yield start, chunk
            chunk, start = [], index + 1
    if chunk:
        yield start, chunk


def apply_chat_template_override(tokenizer, cfg: DataConfig) -> None:
    """Install data.chat_template; refuse a tokenizer that has no chat template at all."""
    if cfg.chat_template is not None:
        tokenizer.chat_template = _read(cfg.chat_template, "data.chat_template")
    if not tokenizer.chat_template:
        raise UserError(
            "the student's tokenizer has no chat template", "set data.chat_template to a jinja2 file"
        )


def _example(index: int, fields: dict, prompt_ids: list[int], response_ids: list[int] | None) -> Example:
    verification = fields.get("verification") or {"kind": "exact", "answer": fields.get("answer", "")}
    length, depth = fields.get("length"), fields.get("depth")
    return Example(
        index=index,
        id=str(fields.get("id", index)),
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        verification=dict(verification),
        task=str(fields.get("task", "all")),
        length=int(length) if length is not None else None,
        depth=float(depth) if depth is not None else None,
    )


def _check_fields(dataset, cfg: DataConfig, needed: set[str], split: str, need_answer: bool) -> None:
    columns = dataset.column_names
    for name, column in sorted(cfg.columns.items()):
        if column not in columns:
            raise UserError(
                f"data.columns.{name} names column '{column}', which split '{split}' lacks "
                f"(columns: {', '.join(columns)})",
                "fix the column name in data.columns",
            )
    available = set(columns) | set(cfg.columns) | set(cfg.defaults)
    if need_answer and not available & {"verification", "answer"}:
        needed = needed | {"answer"}
    missing = sorted(needed - available)
    if missing:
        raise UserError(
            f"split '{split}' of '{cfg.path}' has no column for field '{missing[0]}' "
            f"(columns: {', '.join(columns)})",
            f"map it with data.columns.{missing[0]}=<column> or set data.defaults.{missing[0]}",
        )


def _prompt_template(cfg: DataConfig) -> str:
    return (
        DEFAULT_TEMPLATE
        if cfg.prompt_template is None
        else _read(cfg.prompt_template, "data.prompt_template")
    )


def _read(path: str, field: str) -> str:
    if not Path(path).is_file():
        raise UserError(f"{field} '{path}' is not a file", f"set {field} to a jinja2 template file")
    return Path(path).read_text(encoding="utf-8")


class Batches:
    """Epoch-shuffled batches of example positions. The order depends only on (seed, epoch),
    so (epoch, cursor) is the whole state a resumed run needs to continue exactly."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch, self.cursor = 0, 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self) -> list[int]:
        """The next batch_size positions; a batch that crosses an epoch end continues into the next."""
        batch: list[int] = []
        while len(batch) < self.batch_size:
            order = self._order(self.epoch)
            take = order[self.cursor : self.cursor + self.batch_size - len(batch)]
            batch += take
            self.cursor += len(take)
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
