"""Preparing a split (`dgrpo.data.prepare`) against the per-row path it replaced.

Every `dgrpo train`, `dgrpo evaluate` and the study's reader tokenize a whole split before the
first step. The per-row path compiled the prompt template and called the tokenizer once per row;
`prepare` compiles the template once and tokenizes `PREPARE_CHUNK` rows per call. Both run in
this process on the same rows (a longblocks multihop dataset built here, Qwen3 tokenizer) and
must give the same token ids; the table gives milliseconds per row and the ratio.

    .venv/bin/python bench/prepare.py                     # 240 rows at 2k tokens, 3 repeats
    .venv/bin/python bench/prepare.py --rows 600 --length 1024
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dgrpo import data  # noqa: E402
from dgrpo.config import DataConfig  # noqa: E402
from dgrpo.models import embedded_tokenizer  # noqa: E402
from longblocks import io  # noqa: E402
from longblocks.build import build  # noqa: E402
from longblocks.config import BuildConfig  # noqa: E402


def per_row(cfg: DataConfig, tokenizer) -> list[tuple[list[int], list[int]]]:
    """The path `prepare` replaced: the template compiled and the tokenizer called per row."""
    out = []
    for row in data.load_split(cfg, "train"):
        fields = data.row_fields(row, cfg)
        user = data._ENV.from_string(data.DEFAULT_TEMPLATE).render(**fields)
        system = [{"role": "system", "content": fields["system"]}] if fields.get("system") else []
        messages = [*system, {"role": "user", "content": user}]
        prompt = tokenizer(data.chat_text(messages, tokenizer, cfg), add_special_tokens=False)["input_ids"]
        response = tokenizer(data.response_text(fields, cfg), add_special_tokens=False)["input_ids"]
        out.append((prompt, [*response, tokenizer.eos_token_id]))
    return out


def chunked(cfg: DataConfig, tokenizer) -> list[tuple[list[int], list[int]]]:
    prepared = data.prepare(cfg, tokenizer, "train", with_response=True, with_verification=True)
    return [(e.prompt_ids, e.response_ids) for e in prepared.examples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=240, help="rows generated (80%% land in train)")
    parser.add_argument("--length", type=int, default=2048, help="prompt length in tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timings per path (median reported)")
    args = parser.parse_args()
    tokenizer = embedded_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        build_cfg = BuildConfig(lengths=[args.length], num_examples=args.rows, seed=0)
        rows, worlds = build(build_cfg)
        io.save(rows, worlds, build_cfg, Path(tmp), overwrite=True)
        cfg = DataConfig(path=tmp, max_prompt_tokens=1 << 20, max_response_tokens=1 << 16)
        n = len(data.load_split(cfg, "train"))
        seconds, outputs = {}, {}
        for name, path in (("per row", per_row), ("prepare", chunked)):
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                outputs[name] = path(cfg, tokenizer)
                times.append(time.perf_counter() - started)
            seconds[name] = statistics.median(times)
    assert outputs["per row"] == outputs["prepare"], "the two paths disagree on token ids"
    print(f"{n} train rows at {args.length} tokens, median of {args.repeats}; same token ids: yes")
    print("| path | ms per row | speed-up |")
    print("|---|---:|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {1000 * s / n:.2f} | {seconds['per row'] / s:.2f}x |")


if __name__ == "__main__":
    main()
