"""The method comparison at a chosen scale: `python -m dgrpo.study CONFIG` (see docs/results.md).

Stages, each cached in the study's output folder: tokenizer and datasets (`longblocks
generate`), a teacher trained by sft, a student warm start, then sft / kd / grpo / opd / dgrpo
from that student at the same budget over several seeds, evaluated on held-out worlds, and a
report (`docs/results.md` with its plots).
"""
