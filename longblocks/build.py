"""`build(cfg)`: the library call behind `longblocks generate`.

Worlds are the unit of work and of splitting: every world belongs to exactly one split, so
train/validation/test never share an entity or a fact. A world and its examples depend only
on (seed, world index, example index), never on which worker made them or in what order, so
the output is byte-identical for any `workers`.
"""

import math
import multiprocessing
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from statistics import fmean

from longblocks import audit
from longblocks.config import BuildConfig
from longblocks.errors import UserError
from longblocks.gcpause import cyclic_gc_paused
from longblocks.render.context import SENTINEL, ContextBuilder, Evidence, EvidenceTooLong, SizingMiss
from longblocks.render.documents import Renderer
from longblocks.render.env import render
from longblocks.render.sizing import TokenCounter, load_counter
from longblocks.row import Row, prompt_messages
from longblocks.tasks import TASKS
from longblocks.world.graph import WorldGraph, WorldSize, build_world
from longblocks.world.schema import World

SPLITS = ("train", "validation", "test")
SOURCE = "longblocks/synthetic"
TOLERANCE = 0.005  # ±0.5% of the target length
MAX_REDRAWS = 8  # questions drawn per example before the length is declared too short
# Draws whose context the sizer cannot bring within tolerance: below 512 tokens with a small
# tokenizer about a quarter of draws miss (1,128 misses in 4,128 draws at 384 tokens), so 8 draws
# failed about once in 30,000 rows; with 32 all draws miss about once in 1e18 (0.27**32).
MAX_SIZING_REDRAWS = 32


@dataclass(frozen=True)
class WorldJob:
    """One world to build and the target length of each example drawn from it."""

    index: int
    world_id: str
    seed: int
    split: str
    language: str
    lengths: tuple[int, ...]
    tasks: tuple[str, ...]  # task of each example, aligned with `lengths`

    def row_id(self, j: int) -> str:
        return f"{self.world_id}-{self.tasks[j]}-{j:03d}"


def split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Examples per split; every split with a positive share gets at least one when n >= 3."""
    counts = [round(n * f) for f in fractions[1:]]
    if n >= 3:
        counts = [max(1, c) if f > 0 else 0 for c, f in zip(counts, fractions[1:], strict=True)]
    return [n - sum(counts), *counts]


def task_schedule(cfg: BuildConfig) -> list[str]:
    """The task of every example: exact shares by largest remainder, in a seeded order."""
    if cfg.task != "all":
        return [cfg.task] * cfg.num_examples
    total = sum(cfg.mix.values())
    quotas = {name: cfg.num_examples * share / total for name, share in sorted(cfg.mix.items())}
    counts = {name: int(q) for name, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda name: (counts[name] - quotas[name], name))
    for name in by_remainder[: cfg.num_examples - sum(counts.values())]:
        counts[name] += 1
    schedule = [name for name, n in counts.items() for _ in range(n)]
    random.Random(f"{cfg.seed}:tasks").shuffle(schedule)
    return schedule


def plan_worlds(cfg: BuildConfig) -> list[WorldJob]:
    """Assign examples to worlds and worlds to splits, deterministically."""
    tasks = task_schedule(cfg)
    jobs: list[WorldJob] = []
    example = 0
    for split, n_split in zip(SPLITS, split_counts(cfg.num_examples, cfg.split_fractions), strict=True):
        n_worlds = math.ceil(n_split / cfg.examples_per_world)
        for w in range(n_worlds):
            n = n_split // n_worlds + (1 if w < n_split % n_worlds else 0)
            index = len(jobs)
            lengths = tuple(cfg.lengths[(example + j) % len(cfg.lengths)] for j in range(n))
            job_tasks = tuple(tasks[example : example + n])
            example += n
            jobs.append(
                WorldJob(
                    index=index,
                    world_id=f"s{cfg.seed}-w{index:04d}",
                    seed=random.Random(f"{cfg.seed}:world:{index}").getrandbits(63),
                    split=split,
                    language=cfg.languages[index % len(cfg.languages)],
                    lengths=lengths,
                    tasks=job_tasks,
                )
            )
    return jobs


def shard_jobs(jobs: list[WorldJob], shard: tuple[int, int] | None) -> list[WorldJob]:
    """The jobs of shard (K, N): every N-th world from the K-th, so each shard gets a mix of
    splits, languages and lengths and the N shards partition the plan; None keeps them all."""
    if shard is None:
        return jobs
    k, n = shard
    return [job for job in jobs if job.index % n == k - 1]


def jobs_to_build(cfg: BuildConfig) -> list[WorldJob]:
    """The planned worlds this run builds: all of them, or those of `cfg.shard`."""
    return shard_jobs(plan_worlds(cfg), cfg.shard)


@cache
def _counter(tokenizer: str | None) -> TokenCounter:
    return load_counter(tokenizer)  # one per process: workers build their own


def generate_world(job: WorldJob, cfg: BuildConfig) -> tuple[World, list[dict]]:
    """Build one world and all of its examples (runs inside a worker process)."""
    # A generated world leaves no cyclic garbage. The graph, corpus and count caches die with
    # _generate_world's frame, still inside the pause: the collector never scans them.
    with cyclic_gc_paused():
        return _generate_world(job, cfg)


def _generate_world(job: WorldJob, cfg: BuildConfig) -> tuple[World, list[dict]]:
    world = build_world(job.world_id, job.seed, job.language, WorldSize.for_length(max(job.lengths)))
    builder = ContextBuilder(Renderer(WorldGraph(world)), _counter(cfg.tokenizer))
    rows = [
        generate_example(builder, job, j, length, cfg).model_dump() for j, length in enumerate(job.lengths)
    ]
    return world, rows


def generate_example(builder: ContextBuilder, job: WorldJob, j: int, length: int, cfg: BuildConfig) -> Row:
    """One row: sample a question on the graph, then size a context around its evidence.

    A question whose evidence does not fit the length is redrawn (a few times) before the
    length is reported as too short: at 1k a 6-fact chain in German may not fit, a 3-fact one will.
    A context the sizer cannot bring within tolerance is redrawn the same way, up to
    MAX_SIZING_REDRAWS times, then reported as a length it cannot size.
    """
    rng = random.Random(f"{cfg.seed}:{job.world_id}:{j}")
    task = TASKS[job.tasks[j]]
    language = job.language
    system = render(f"{language}/prompt/system.jinja").strip()
    instruction = render(f"{language}/prompt/instruction_{task.name}.jinja").strip()
    shared_depth = None if cfg.depth == "uniform" else rng.choice(cfg.depth)
    too_long = 0
    for _ in range(MAX_SIZING_REDRAWS):
        instance = task.sample(builder.renderer, rng, replace(cfg.task_params(), length=length))
        frame = {
            "document": SENTINEL,
            "question": instance.question,
            "instruction": instruction,
            "system": system,
        }
        evidence = [
            Evidence(fact, rng.random() if shared_depth is None else shared_depth)
            for fact in instance.evidence
        ]
        try:
            context = builder.build(
                prompt_messages(frame),
                evidence,
                instance.near,
                instance.excluded,
                target=length,
                tolerance=int(length * TOLERANCE),
                rng=rng,
                pinned=instance.pinned,
                documents=instance.documents,
                near_facts=instance.near_facts,
            )
        except EvidenceTooLong:
            too_long += 1
            if too_long == MAX_REDRAWS:
                raise
            continue
        except SizingMiss as miss:
            last_miss = miss
            continue
        graph = builder.renderer.graph
        if not too_few_candidates(graph, task.name, instance.verification, context.document, length):
            break
        last_miss = "too few entities of the answer's type named"
    else:
        raise UserError(
            f"no context of {length} tokens could be sized in {MAX_SIZING_REDRAWS} draws ({last_miss})",
            "choose a longer --length: at this one whole documents are too coarse to fill it exactly",
        )
    refs = locate(context, [f.id for f in instance.evidence])
    pinned_refs = locate(context, [doc.facts[0] for doc, _ in instance.pinned])
    verification = {
        **instance.verification,
        "answer": instance.answer,
        "aliases": instance.aliases,
        "evidence": [{k: r[k] for k in ("fact_id", "doc_id", "depth", "sentence")} for r in refs],
    }
    if verification["kind"] == "cited":
        verification["citations"] = sorted({r["doc_id"] for r in refs})
    return Row(
        id=job.row_id(j),
        document=context.document,
        source=SOURCE,
        language=language,
        question=instance.question,
        answer=instance.answer,
        task=task.name,
        split=job.split,
        world_id=job.world_id,
        length=length,
        depth=round(fmean(r["depth"] for r in refs), 4) if refs else 0.0,
        n_tokens=context.n_tokens,
        tokenizer=builder.count.counter.name,
        system=system,
        instruction=instruction,
        reference=task.reference(instance, refs + pinned_refs, language),
        verification=verification,
    )


def too_few_candidates(graph: WorldGraph, task: str, verification: dict, document: str, length: int) -> bool:
    """Whether a chain row's context names fewer entities of its answer's fine type than the
    audit asks for, by the audit's own check ("too few candidates of type"): the sizer may leave
    out decoy documents to fit a short length, and a guess among two is cheap (1.3% of one-hop
    rows at 768 tokens and 0.5% at 1k, before such rows were redrawn)."""
    row = {"task": task, "verification": verification, "document": document, "length": length}
    return audit.is_chain_row(row) and audit.too_few_candidates(audit.chain_row(row, audit_world(graph)))


@lru_cache(maxsize=4)  # the worlds a worker is building rows of (one at a time)
def audit_world(graph: WorldGraph) -> audit.AuditWorld:
    """The world as the audit sees it: fine types from its structure (a club has members)."""
    return audit.AuditWorld.from_data(graph.world.model_dump())


def locate(context, fact_ids: list[str]) -> list[dict]:
    """Where each fact sits: fact_id, doc_id, depth, its sentence verbatim, the document's year."""
    documents = {d.doc_id: d for d in context.documents}
    refs = []
    for fact_id in fact_ids:
        doc_id, depth = context.depths[fact_id]
        doc = documents[doc_id]
        sentence = doc.sentences[doc.facts.index(fact_id)].strip()
        refs.append(
            {"fact_id": fact_id, "doc_id": doc_id, "depth": depth, "sentence": sentence, "year": doc.year}
        )
    return refs


def _run(args: tuple[WorldJob, BuildConfig]) -> tuple[World, list[dict]]:
    return generate_world(*args)


def generate(cfg: BuildConfig) -> Iterator[tuple[WorldJob, World, list[dict]]]:
    """Yield (job, world, rows) in plan order, using `cfg.workers` processes."""
    jobs = jobs_to_build(cfg)
    if cfg.workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, *generate_world(job, cfg)
        return
    # Fork: workers inherit the loaded vocabulary and templates instead of re-importing them
    # (a spawned worker spends ~2 s starting). Tokenizer thread pools are never used here.
    _counter(cfg.tokenizer).count("warm up")  # loads the vocabulary once, before forking
    context = multiprocessing.get_context("fork")
    with context.Pool(min(cfg.workers, len(jobs))) as pool:
        for job, result in zip(jobs, pool.imap(_run, [(job, cfg) for job in jobs]), strict=True):
            yield job, *result


def build(cfg: BuildConfig, on_world: Callable[[WorldJob], None] | None = None):
    """All rows grouped by split, plus the worlds they came from."""
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    worlds: list[World] = []
    for job, world, world_rows in generate(cfg):
        rows[job.split].extend(world_rows)
        worlds.append(world)
        if on_world is not None:
            on_world(job)
    return rows, worlds
