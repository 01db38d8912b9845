"""`validate_dataset(path)`: re-check a saved dataset without trusting the generator's fields.

Every claim a row makes is measured again from the artifact; the checks a `Report` counts:
- layout: `load_from_disk` gives train/validation/test; the parquet shards in data/ hold the
  same rows; worlds/ has a valid world JSON for every `world_id`;
- schema: rows validate against schemas/row.schema.json and the pydantic `Row`;
- tokens: the prompt, re-templated and re-counted, equals `n_tokens`, within ±0.5% of `length`;
- evidence: each evidence sentence occurs once in the context, inside document `[doc_id]`, at
  its recorded token depth (±0.02); cited doc ids exist;
- answers: the task re-derives the row from its saved world graph; `reference` earns full reward;
- graph: the answer again, by a networkx traversal of the saved world's facts (not the
  generator's indexes): the relation path from the start reaches exactly the answer;
- text: at 2+ hops no sentence names both the start and the answer; no document states a year
  after its own date; at most 3% of a context's sentences repeat an earlier one exactly;
- shortcuts: no cheap baseline of `longblocks.audit` beats chance by more than `margin`
  (baselines measured on fewer than `audit.MIN_ROWS` rows are too noisy to judge: skipped);
- unique: row ids are unique over all splits;
- splits: rows sit in the split their `split` column names; no world spans two splits.

Problems are collected in the `Report`, never printed; only a path that is no dataset at all
(or a tokenizer that cannot be loaded) raises `UserError`.
"""

import bisect
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from statistics import fmean
from typing import Any, NamedTuple

import datasets
import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from longblocks import audit
from longblocks.build import SPLITS, TOLERANCE
from longblocks.errors import UserError
from longblocks.render.env import find_folder
from longblocks.render.sizing import TokenCounter, load_counter
from longblocks.rewards import SCORERS, score
from longblocks.row import Row, prompt_messages
from longblocks.tasks import TASKS
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import RELATIONS, World

log = logging.getLogger(__name__)

CHECKS = (
    "layout",
    "schema",
    "tokens",
    "evidence",
    "answers",
    "graph",
    "text",
    "shortcuts",
    "unique",
    "splits",
)
DEPTH_TOLERANCE = 0.02  # recorded vs re-measured relative token depth of an evidence sentence
REWARD_FLOOR = {"rubric": 0.99}  # the reference's minimum score by verification kind; else 1.0
DOC_HEADER = re.compile(r"\[(D\d+)\] ")
_FIX = "pass the --out folder written by `longblocks generate`"


class Failure(NamedTuple):
    where: str  # row id, split name, world file or the dataset path
    check: str  # one of CHECKS
    reason: str


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0


@dataclass
class Report:
    """Per-check counts of items passed/failed, and every problem found."""

    path: Path
    rows: int = 0
    counts: dict[str, Tally] = field(default_factory=lambda: {name: Tally() for name in CHECKS})
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def record(self, check: str, where: str, problems: list[str]) -> None:
        tally = self.counts[check]
        if problems:
            tally.failed += 1
            self.failures.extend(Failure(where, check, reason) for reason in problems)
        else:
            tally.passed += 1

    def render(self, examples: int = 5) -> str:
        """A table of counts, then at most `examples` failures per check."""
        lines = [f"validate {self.path}: {self.rows} rows", f"  {'check':<9} {'passed':>7} {'failed':>7}"]
        lines += [f"  {name:<9} {t.passed:>7} {t.failed:>7}" for name, t in self.counts.items()]
        if self.ok:
            return "\n".join([*lines, "OK: every check passed"])
        lines.append(f"FAILED: {len(self.failures)} problem(s)")
        for name in CHECKS:
            found = [f for f in self.failures if f.check == name]
            lines += [f"  [{name}] {f.where}: {f.reason}" for f in found[:examples]]
            if len(found) > examples:
                lines.append(f"  [{name}] ... and {len(found) - examples} more")
        return "\n".join(lines)


def validate_dataset(path: Path, tokenizer: str | None = None, margin: float = audit.MARGIN) -> Report:
    """Re-check the dataset saved at `path`; `tokenizer` overrides each row's `tokenizer`;
    `margin` is how far a shortcut baseline may beat chance (see `longblocks.audit`)."""
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        problem = "is not a dataset (no dataset_dict.json)" if path.is_dir() else "is not a directory"
        raise UserError(f"{path} {problem if path.exists() else 'does not exist'}", _FIX)
    report = Report(path)
    splits = _load_splits(path, report)
    rows = [row for split_rows in splits.values() for row in split_rows]
    report.rows = len(rows)
    graphs = _load_graphs(path / "worlds", {row.get("world_id") for row in rows}, report)
    networks = {
        w: (world_network(g.world), audit.AuditWorld.from_data(g.world.model_dump()))
        for w, g in graphs.items()
    }
    names = {tokenizer} if tokenizer else {row.get("tokenizer") for row in rows}
    # Loaded before any row: a tokenizer that cannot be loaded is a usage error, not bad data.
    try:
        counters = {name: load_counter(name) for name in names if isinstance(name, str)}
    except UserError as err:
        raise UserError(err.problem, "pass --tokenizer DIR: a local copy of the rows' tokenizer") from err
    validator = _row_validator()
    for row in rows:
        where = str(row.get("id"))
        counter = counters.get(tokenizer or row.get("tokenizer"))
        report.record("schema", where, _guarded(check_schema, row, validator))
        report.record("tokens", where, _guarded(check_tokens, row, counter))
        report.record("evidence", where, _guarded(check_evidence, row, counter))
        report.record("answers", where, _guarded(check_answers, row, graphs.get(row.get("world_id"))))
        network, plain = networks.get(row.get("world_id"), (None, None))
        report.record("graph", where, _guarded(check_graph, row, network))
        report.record("text", where, _guarded(check_text, row, plain))
    _check_shortcuts(rows, {w: plain for w, (_, plain) in networks.items()}, margin, report)
    _check_splits(splits, report)
    log.info("validated %d rows of %s: %d problem(s)", len(rows), path, len(report.failures))
    return report


def _guarded(check: Callable[..., list[str]], row: dict, *args: Any) -> list[str]:
    # Rows are untrusted input: a malformed one is a failure to report, not a crash.
    try:
        return check(row, *args)
    except Exception as err:
        return [f"cannot check ({type(err).__name__}: {err})"]


def _load_splits(path: Path, report: Report) -> dict[str, list[dict]]:
    """Rows by split, after checking the splits and that the parquet shards hold them too."""
    try:
        dataset = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
        report.record("layout", str(path), [f"load_from_disk fails: {type(err).__name__}: {err}"])
        return {}
    problems = [f"split '{s}' is missing" for s in SPLITS if s not in dataset]
    problems += [f"unexpected split '{s}'" for s in dataset if s not in SPLITS]
    report.record("layout", "splits", problems)
    splits = {split: dataset[split] for split in SPLITS if split in dataset}
    for split, data in splits.items():
        report.record("layout", f"data/{split}", _guarded(_check_parquet, data, path / "data", split))
    return {split: data.to_list() for split, data in splits.items()}


def _check_parquet(data: datasets.Dataset, folder: Path, split: str) -> list[str]:
    shards = sorted(folder.glob(f"{split}-*.parquet"))
    if not shards:
        return [f"no parquet shards data/{split}-*.parquet"]
    table, saved = pa.concat_tables(pq.read_table(s) for s in shards), data.with_format("arrow")[:]
    if table.num_rows != saved.num_rows:
        return [f"parquet shards hold {table.num_rows} rows, the saved dataset {saved.num_rows}"]
    if table.column("id").to_pylist() != saved.column("id").to_pylist():
        return ["parquet row ids differ from the saved dataset's"]
    if not table.equals(saved):
        return ["parquet rows differ from the saved dataset's"]
    return []


def _load_graphs(folder: Path, world_ids: set, report: Report) -> dict[str, WorldGraph]:
    """The graph of every referenced world that has a valid file in worlds/."""
    graphs = {}
    for world_id in sorted(w for w in world_ids if isinstance(w, str)):
        file = folder / f"{Path(world_id).name}.json"  # a row cannot point outside worlds/
        try:
            world = World.model_validate_json(file.read_text(encoding="utf-8"))
            problems = [] if world.id == world_id else [f"{file.name} holds world '{world.id}'"]
        except OSError:
            problems = [f"world file for '{world_id}' is missing"]
        except ValidationError as err:
            problems = [f"invalid world: {_first_error(err)}"]
        report.record("layout", f"worlds/{file.name}", problems)
        if not problems:
            graphs[world_id] = WorldGraph(world)
    return graphs


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


def _row_validator():
    # The committed schema (a wheel carries it as longblocks/_schemas), not the live export.
    schema = json.loads((find_folder("schemas") / "row.schema.json").read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


def check_schema(row: dict, validator) -> list[str]:
    """JSON Schema errors (at most 3), else pydantic's first error, else []."""
    errors = sorted(validator.iter_errors(row), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{'.'.join(map(str, e.absolute_path)) or 'row'}: {e.message}" for e in errors[:3]]
    if problems:
        return problems
    try:
        Row.model_validate(row)
    except ValidationError as err:
        return [_first_error(err)]
    return []


def check_tokens(row: dict, counter: TokenCounter) -> list[str]:
    """The prompt, re-templated and counted once, must match `n_tokens` and `length`."""
    n = counter.count(counter.chat_prompt(prompt_messages(row)))
    problems = []
    if n != row["n_tokens"]:
        problems.append(f"prompt measures {n} tokens with {counter.name}, n_tokens says {row['n_tokens']}")
    allowed = int(row["length"] * TOLERANCE)
    if abs(n - row["length"]) > allowed:
        problems.append(f"prompt has {n} tokens, outside length {row['length']} ± {allowed} (0.5%)")
    return problems


def check_evidence(row: dict, counter: TokenCounter) -> list[str]:
    """Evidence sentences: verbatim, once, in their document, at their token depth."""
    document, v = row["document"], row["verification"]
    pieces = document.split("\n\n")  # one piece per document: "[D1234] Title\n..."
    starts = list(accumulate((len(piece) + 2 for piece in pieces[:-1]), initial=0))
    ids = [header[1] if header else None for header in map(DOC_HEADER.match, pieces)]
    problems = [f"document at char {starts[i]} has no [D1234] header" for i, d in enumerate(ids) if d is None]
    problems += [f"doc id {d} heads {n} documents" for d, n in sorted(Counter(ids).items()) if d and n > 1]
    # Token sizes as the generator counts them: each document with its blank line.
    sizes = counter.count_batch([piece + "\n\n" for piece in pieces])
    for ref in v["evidence"]:
        sentence, fact = ref["sentence"], ref["fact_id"]
        n = document.count(sentence) if sentence else 0
        if n != 1:
            problems.append(f"evidence {fact} occurs {n} times in the document, not once: {sentence[:80]!r}")
            continue
        at = document.index(sentence)
        k = bisect.bisect_right(starts, at) - 1
        local = at - starts[k]
        if ids[k] != ref["doc_id"] or local + len(sentence) > len(pieces[k]):
            problems.append(f"evidence {fact} is in document {ids[k]}, not in {ref['doc_id']}")
            continue
        # The sentence's leading space belongs to the sentence, as in render.context.
        before = sum(sizes[:k]) + counter.count(pieces[k][:local].removesuffix(" "))
        depth = before / sum(sizes)
        if abs(depth - ref["depth"]) > DEPTH_TOLERANCE:
            problems.append(f"evidence {fact} sits at depth {depth:.4f}, recorded {ref['depth']}")
    depths = [ref["depth"] for ref in v["evidence"]]
    mean = round(fmean(depths), 4) if depths else 0.0
    if abs(mean - row["depth"]) > 1e-3:
        problems.append(f"row depth {row['depth']} is not the mean evidence depth {mean}")
    problems += [f"citation {d} names no document of the context" for d in v["citations"] if d not in ids]
    return problems


def check_answers(row: dict, graph: WorldGraph | None) -> list[str]:
    """The task re-derives the row from the world graph; the reference earns the full reward."""
    if graph is None:
        return [f"world '{row['world_id']}' has no valid file in worlds/: the answer cannot be re-derived"]
    task = TASKS.get(row["task"])
    if task is None:
        return [f"unknown task '{row['task']}' (known: {', '.join(sorted(TASKS))})"]
    v = row["verification"]
    problems = list(task.check(row, graph))
    if row["answer"] != v["answer"]:
        problems.append(f"answer '{row['answer']}' differs from verification.answer '{v['answer']}'")
    if v["kind"] not in SCORERS:
        return [*problems, f"no reward scores verification kind '{v['kind']}'"]
    floor = REWARD_FLOOR.get(v["kind"], 1.0)
    result = score(row["reference"], v)
    if result.value < floor:
        problems.append(f"the reference scores {result.value:.3f} ({result.status}), below {floor}")
    return problems


def world_network(world: World):
    """The world's current facts as a networkx MultiDiGraph (edge attribute `relation`), built
    from the saved facts alone: a second road to every answer, beside the generator's indexes."""
    import networkx as nx

    network = nx.MultiDiGraph()
    network.add_nodes_from((e.id, {"name": e.name}) for e in world.entities)
    for fact in world.facts:
        network.add_edge(
            fact.head, fact.tail, relation=fact.relation, former="until" in fact.attributes, **fact.attributes
        )
    return network


def _edges(network, node: str, relation: str, former: bool = False) -> list[tuple[str, dict]]:
    """(other end, edge data) of `node`'s current (or former) edges of `relation`, read both ways
    for a symmetric relation."""
    found = [(t, d) for _, t, d in network.out_edges(node, data=True) if d["relation"] == relation]
    if RELATIONS[relation].symmetric:
        found += [(h, d) for h, _, d in network.in_edges(node, data=True) if d["relation"] == relation]
    return [(other, d) for other, d in found if d["former"] == former]


def network_follow(network, start: str, path: list[str]) -> set[str]:
    """Entities reached from `start` along `path` over current facts."""
    frontier = {start}
    for relation in path:
        frontier = {other for node in frontier for other, _ in _edges(network, node, relation)}
    return frontier


def network_elder(network, v: dict) -> tuple[set[str], str | None]:
    """A comparison row's two chains (joined by '|' in `path` and `start_entity`), each
    followed to one person; the one whose birth edge carries the earlier year wins."""
    starts, path = v["start_entity"].split("|"), v["path"]
    cut = path.index("|") if "|" in path else len(path)
    chains = zip(starts, (path[:cut], path[cut + 1 :]), strict=False)
    ends = [network_follow(network, start, relations) for start, relations in chains]
    if len(ends) != 2 or any(len(e) != 1 for e in ends):
        return set().union(*ends), None
    years = [[d["year"] for _, d in _edges(network, next(iter(e)), "born_in")] for e in ends]
    if any(len(y) != 1 for y in years) or years[0] == years[1]:
        return set(), None  # no birth year, or a tie: no answer
    (elder,) = ends[0] if years[0] < years[1] else ends[1]
    return {elder}, network.nodes[elder]["name"]


def network_answer(network, v: dict) -> tuple[set[str], str | None]:
    """What the row's chain reaches, and the answer it implies: the name of the entity reached,
    the number of members or staff it counts (`counting`), the name of the value held just
    before the current one (`temporal`), or the name of the elder of two people (`comparison`)."""
    if v.get("variant") == "comparison":
        return network_elder(network, v)
    if v.get("variant") == "temporal":
        (entity,) = network_follow(network, v["start_entity"], v["path"][:-1]) or {None}
        current = _edges(network, entity, v["path"][-1]) if entity else []
        since = current[0][1].get("since") if len(current) == 1 else None
        before = [o for o, d in _edges(network, entity, v["path"][-1], former=True) if d["until"] == since]
        return set(before), (network.nodes[before[0]]["name"] if len(before) == 1 else None)
    reached = network_follow(network, v["start_entity"], v["path"])
    if len(reached) != 1:
        return reached, None
    (entity,) = reached
    if v.get("variant") == "counting":
        counted = [
            d
            for _, _, d in network.in_edges(entity, data=True)
            if d["relation"] in ("member_of", "works_for")
        ]
        return reached, str(sum(not d["former"] for d in counted))
    return reached, network.nodes[entity]["name"]


def check_graph(row: dict, network) -> list[str]:
    """The path from the start entity reaches exactly the answer entity; the answer follows."""
    v = row["verification"]
    if not v.get("path") or not v.get("start_entity"):
        return []  # rubric rows carry no chain
    if network is None:
        return [f"world '{row['world_id']}' has no valid file in worlds/"]
    reached, answer = network_answer(network, v)
    if reached != {v["answer_entity"]}:
        return [f"networkx: path {v['path']} from {v['start_entity']} reaches {sorted(reached)}"]
    if v.get("variant") != "abstain" and answer != row["answer"]:
        return [f"networkx: the path gives {answer}, the row answers {row['answer']}"]
    return []


def check_text(row: dict, world) -> list[str]:
    """What a reader would flag: a sentence giving a 2+ hop answer away, a document stating a
    year after its own date, sentences repeated word for word."""
    problems = []
    v = row["verification"]
    # A comparison's pairs are its chains of 2+ hops (`audit.start_answer_pairs`).
    chained = (
        world is not None and len(v.get("path", ())) >= 2 and v.get("variant") not in ("abstain", "counting")
    )
    if chained and audit.names_start_and_answer(row, world):
        problems.append("one sentence names both the start entity and the answer")
    late = audit.anachronisms(row["document"], row["language"], world.quantities if world else frozenset())
    problems += [f"document '{title}' states a year after its own date" for title in late[:3]]
    share = audit.repeat_share(row["document"])
    if share > audit.MAX_REPEATS:
        problems.append(f"{share:.1%} of the sentences repeat an earlier one exactly (limit 3%)")
    return problems


def _check_shortcuts(rows, worlds, margin: float, report: Report) -> None:
    """Each audit record fails the dataset where it exceeds its limit. Baselines compared with
    chance count only over `audit.MIN_ROWS` rows or more; exact counts (anachronisms, shortcut
    sentences) count at any size."""
    usable = [r for r in rows if r.get("world_id") in worlds]
    try:
        results = audit.audit_rows(usable, worlds, margin)
    except Exception as err:  # malformed rows were reported by the row checks already
        report.record("shortcuts", "audit", [f"cannot audit ({type(err).__name__}: {err})"])
        return
    for result in results:
        if not result.judged:
            continue
        problem = f"{result.value:g} > limit {result.limit:.4g} (chance {result.chance:g})"
        report.record("shortcuts", f"{result.task}: {result.name}", [] if result.passed else [problem])


def _check_splits(splits: dict[str, list[dict]], report: Report) -> None:
    """Ids unique over all splits; rows in their own split; every world in one split only."""
    first_split: dict[str, str] = {}
    world_splits: dict[str, set[str]] = defaultdict(set)
    for split, rows in splits.items():
        for row in rows:
            where = str(row.get("id"))
            seen = first_split.get(where)
            report.record("unique", where, [f"id {where} is used again (first in {seen})"] if seen else [])
            first_split.setdefault(where, split)
            moved = f"stored in {split}, but its split column says {row.get('split')}"
            report.record("splits", where, [moved] if row.get("split") != split else [])
            world_splits[str(row.get("world_id"))].add(split)
    for world_id, found in sorted(world_splits.items()):
        shared = [f"world {world_id} appears in {', '.join(sorted(found))}"] if len(found) > 1 else []
        report.record("splits", f"world {world_id}", shared)
