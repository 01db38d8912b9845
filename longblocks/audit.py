"""`audit(path)`: how far cheap shortcuts get on a saved dataset, measured from text and world.

A verifiable reward is worth what its shortcuts leave over: a policy trained on it finds every
way to earn reward without reading. Each baseline here answers without following the chain
(the answer's type and mention counts, positions, co-occurrence, a missing document, the longer
of two documents) and is scored against the chance of guessing among the candidates the
context offers. Text checks measure what a careful reader would flag (exact repeats, dates
after a document's own date, one sentence that names both the start and the answer).

The audit reads only the rows' text and the saved worlds (as plain JSON), never the
generator's indexes, so a generator bug cannot hide itself. The result is a list of
`AuditResult` records, one rule for all of them: a record passes when
`value <= limit`, the chance plus the margin or, on few rows, plus the sampling noise a fair
guess shows there (`AuditResult.limit`); other sections (e.g. reward attacks) append records of the same
shape. `docs/rows.md` documents the columns the audit reads.
"""

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cache, cached_property
from pathlib import Path
from statistics import fmean

import datasets

from longblocks.errors import UserError
from longblocks.render.env import TEMPLATES_DIR

MARGIN = 0.10  # how far a baseline may beat chance before the dataset fails validation
MAX_REPEATS = 0.03  # share of a context's sentences that repeat an earlier one exactly
MAX_FINAL_RELATION = 0.25  # share of one final relation among the chains of a split and length
# (split, length) buckets smaller than this are too noisy for the relation check: among 23
# validation rows of a fair mix, 6 shared one final relation (0.26 against a limit of 0.25).
MIN_BUCKET = 50
MIN_ROWS = 50  # rows a baseline needs before its distance from chance is judged
NOISE_Z = 3.0  # a baseline fails only this many standard errors of a fair guess above chance
ATTACK_LIMIT = 0.2  # the most a reward attack (a response without the skill) may earn
ATTACK_ROWS = 300  # rows the reward attacks are scored on (the first by id: ~50 ms a row)
AUDIT_FILE = "audit.json"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_YEAR = re.compile(r"(?<![\w])(1[6-9]\d\d|20\d\d)(?![\w])")
_DOC = re.compile(r"^\[(D\d+)\] ", re.M)
_DATES = ("year", "since", "until", "role")  # attributes that are no quantity (role: an index)
_PLACEHOLDER = re.compile(r"\{\{ *(\w+) *\}\}")


@dataclass(frozen=True)
class AuditResult:
    """One measured baseline or check: it passes when `value <= limit`."""

    name: str
    task: str  # the rows it was measured on, e.g. "multihop" or "grounding/abstain"
    value: float
    chance: float
    margin: float
    n: int  # rows measured

    @property
    def judged(self) -> bool:
        """Exact counts and attacks are judged at any size; a baseline against chance from
        `MIN_ROWS` rows."""
        return self.chance == 0 or self.n >= MIN_ROWS or self.name.startswith("attack: ")

    @property
    def limit(self) -> float:
        """chance + margin, or chance + NOISE_Z standard errors of a fair guess over n rows when
        that is more: on 71 comparison rows a fair coin scores 0.5 ± 0.06 and passes 0.60 about
        one time in twenty, while an audit judges about 20 baselines. On a few hundred rows the
        margin decides."""
        if not (0 < self.chance < 1 and self.n):
            return self.chance + self.margin  # an exact count or an attack: no guess to be lucky
        noise = NOISE_Z * math.sqrt(self.chance * (1 - self.chance) / self.n)
        return min(1.0, self.chance + max(self.margin, noise))

    @property
    def passed(self) -> bool:
        return not self.judged or self.value <= self.limit + 1e-12

    def as_dict(self) -> dict:
        return {**asdict(self), "limit": round(self.limit, 4), "judged": self.judged, "passed": self.passed}


# --- the world, read as plain data -------------------------------------------------------------


@dataclass
class AuditWorld:
    """A saved world as the audit sees it: names, fine types and current facts."""

    names: dict[str, str]  # entity id -> name
    fine: dict[str, str]  # entity id -> fine type (town, region, company, club, person, ...)
    facts: list[dict]  # current facts (former ones removed)
    former: list[dict]
    quantities: frozenset[str] = frozenset()  # attendees, prices, stakes: numbers that are no year

    @classmethod
    def load(cls, file: Path) -> "AuditWorld":
        return cls.from_data(json.loads(file.read_text(encoding="utf-8")))

    @classmethod
    def from_data(cls, data: dict) -> "AuditWorld":
        """From a world as JSON data (`World.model_dump()` or a worlds/*.json file)."""
        facts = [f for f in data["facts"] if "until" not in f["attributes"]]
        former = [f for f in data["facts"] if "until" in f["attributes"]]
        in_region = {f["head"] for f in facts if f["relation"] == "located_in"}
        has_members = {f["tail"] for f in data["facts"] if f["relation"] == "member_of"}
        fine = {}
        for e in data["entities"]:
            # Fine types from the graph's structure, not the generator's bookkeeping: a town lies
            # in a region, a club has members.
            kind = e["type"]
            if kind == "place":
                kind = "town" if e["id"] in in_region else "region"
            elif kind == "organisation":
                kind = "club" if e["id"] in has_members else "company"
            fine[e["id"]] = kind
        quantities = frozenset(
            str(v) for f in data["facts"] for k, v in f["attributes"].items() if k not in _DATES
        )
        return cls({e["id"]: e["name"] for e in data["entities"]}, fine, facts, former, quantities)

    def of_fine_type(self, fine_type: str) -> list[str]:
        return [e for e, t in self.fine.items() if t == fine_type]


@cache
def _name_pattern(name: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)")


def mentions(text: str, name: str) -> list[int]:
    """Character offsets of whole-word mentions of `name`."""
    return [m.start() for m in _name_pattern(name).finditer(text)]


def sentences(document: str) -> list[str]:
    """The context's sentences (titles and document ids split off as their own lines)."""
    return [s.strip() for s in _SENTENCE_END.split(_DOC.sub("", document)) if s.strip()]


def documents(document: str) -> list[str]:
    return [d for d in document.split("\n\n") if d.strip()]


# --- per-row baselines -------------------------------------------------------------------------


def _argmax_credit(scores: dict[str, float], answer: str) -> float:
    """Expected accuracy of picking the top-scoring candidate, ties broken at random."""
    if not scores:
        return 0.0
    best = max(scores.values())
    top = [c for c, s in scores.items() if s == best]
    return 1 / len(top) if answer in top else 0.0


@dataclass
class ChainRow:
    """A row whose answer is an entity reached by a chain, with the context's candidates."""

    row: dict
    world: AuditWorld
    candidates: dict[str, list[int]]  # entity id of the answer's fine type -> mention offsets

    @property
    def answer(self) -> str:
        return self.row["verification"]["answer_entity"]

    @property
    def start(self) -> str:
        return self.row["verification"]["start_entity"]

    @cached_property
    def final_relation_documents(self) -> dict[str, list[str]]:
        """Candidate -> the documents with a sentence naming it and one of its heads through the
        final relation (the answer's evidence, a decoy's pointer), once per such sentence; read
        once per row for the three baselines that use it."""
        relation = self.row["verification"]["path"][-1]
        heads = defaultdict(set)
        for f in self.world.facts:
            if f["relation"] == relation and f["tail"] in self.candidates:
                heads[f["tail"]].add(self.world.names[f["head"]])
        found = {e: [] for e in self.candidates}
        for doc in documents(self.row["document"]):
            for sentence in sentences(doc):
                for e, names in heads.items():
                    if _name_pattern(self.world.names[e]).search(sentence) and any(
                        _name_pattern(h).search(sentence) for h in names
                    ):
                        found[e].append(doc)
        return found


def chain_row(row: dict, world: AuditWorld) -> ChainRow:
    fine_type = world.fine[row["verification"]["answer_entity"]]
    text = row["document"]
    found = {e: mentions(text, world.names[e]) for e in world.of_fine_type(fine_type)}
    return ChainRow(row, world, {e: m for e, m in found.items() if m})


def most_mentioned(c: ChainRow, prior: Counter) -> float:
    return _argmax_credit({e: len(m) for e, m in c.candidates.items()}, c.answer)


def first_mentioned(c: ChainRow, prior: Counter) -> float:
    return _argmax_credit({e: -m[0] for e, m in c.candidates.items()}, c.answer)


def last_mentioned(c: ChainRow, prior: Counter) -> float:
    return _argmax_credit({e: m[-1] for e, m in c.candidates.items()}, c.answer)


def answer_prior(c: ChainRow, prior: Counter) -> float:
    """The candidate that most often answers the other questions of the dataset."""
    return _argmax_credit({e: prior[e] - (e == c.answer) for e in c.candidates}, c.answer)


def last_hop_most_mentioned(c: ChainRow, prior: Counter) -> float:
    """The candidate most often named as the object of a sentence of the final relation."""
    return _argmax_credit({e: len(docs) for e, docs in c.final_relation_documents.items()}, c.answer)


def shortest_pointer_document(c: ChainRow, prior: Counter) -> float:
    """The candidate named through the final relation in the shortest document: an evidence
    document cut to its evidence sentences beside whole decoy pointers would give it away."""
    found = c.final_relation_documents
    return _argmax_credit({e: -min(map(len, docs)) for e, docs in found.items() if docs}, c.answer)


def longest_pointer_document(c: ChainRow, prior: Counter) -> float:
    """The mirror of `shortest_pointer_document`."""
    found = c.final_relation_documents
    return _argmax_credit({e: max(map(len, docs)) for e, docs in found.items() if docs}, c.answer)


def cooccurs_with_start(c: ChainRow, prior: Counter) -> float | None:
    """The candidate named in most documents that also name the start entity. Only for chains
    of 2+ hops: at one hop the start's document naming the answer is the reading asked for."""
    if len(c.row["verification"]["path"]) < 2:
        return None
    start = _name_pattern(c.world.names[c.start])
    docs = [d for d in documents(c.row["document"]) if start.search(d)]
    votes = {e: sum(bool(_name_pattern(c.world.names[e]).search(d)) for d in docs) for e in c.candidates}
    return _argmax_credit(votes, c.answer)


CHAIN_BASELINES = {
    "answer-type prior": answer_prior,
    "most-mentioned of type": most_mentioned,
    "last-hop most-mentioned": last_hop_most_mentioned,
    "shortest last-hop document": shortest_pointer_document,
    "longest last-hop document": longest_pointer_document,
    "first-mentioned of type": first_mentioned,
    "last-mentioned of type": last_mentioned,
    "co-occurs with start": cooccurs_with_start,
}


def min_candidates(length: int) -> int:
    """Candidates of the answer's fine type a context must offer (fewer make guessing cheap).
    The generator aims at least as high (`tasks.chains.min_candidates` grows beyond 32k); the
    audit keeps its own floor, so that no change to the generator lowers the bar it is judged by."""
    return 3 if length < 4096 else 5 if length < 8192 else 8


def too_few_candidates(c: ChainRow) -> bool:
    """The context names fewer entities of the answer's fine type than `min_candidates`."""
    return len(c.candidates) < min_candidates(c.row["length"])


# --- grounding baselines -----------------------------------------------------------------------


def asked_entity(row: dict, world: AuditWorld) -> str:
    """The entity whose fact the last hop asks for (head of the final fact), by traversal."""
    v = row["verification"]
    entity = v["start_entity"]
    for relation in v["path"][:-1]:
        entity = _step(world, entity, relation)
    return entity


def _step(world: AuditWorld, entity: str, relation: str) -> str:
    for f in world.facts:
        if f["relation"] != relation:
            continue
        if f["head"] == entity:
            return f["tail"]
        if relation == "married_to" and f["tail"] == entity:
            return f["head"]
    raise KeyError(f"{entity} has no {relation}")


def has_own_document(document: str, name: str) -> bool:
    """Whether a document's title line names `name` (the document is about it)."""
    pattern = _name_pattern(name)
    return any(pattern.search(d.split("\n", 1)[0]) for d in documents(document))


def missing_document_f1(rows: list[tuple[dict, AuditWorld]]) -> tuple[float, float]:
    """F1 of 'no document about the asked entity => unanswerable', and the abstain share."""
    tp = fp = fn = 0
    for row, world in rows:
        predicted = not has_own_document(row["document"], world.names[asked_entity(row, world)])
        truth = row["verification"]["variant"] == "abstain"
        tp += predicted and truth
        fp += predicted and not truth
        fn += truth and not predicted
    share = sum(r["verification"]["variant"] == "abstain" for r, _ in rows) / max(1, len(rows))
    return (2 * tp / (2 * tp + fp + fn) if tp else 0.0), share


CONFLICT_RULES = {  # rule -> (check name, a document's score: its length and offset)
    "longer": ("longer document wins", lambda length, offset: length),
    "shorter": ("shorter document wins", lambda length, offset: -length),
    "later": ("later document wins", lambda length, offset: offset),
    "earlier": ("earlier document wins", lambda length, offset: -offset),
}


def conflict_choice(row: dict, world: AuditWorld, rule: str) -> float:
    """The value stated in the document `rule` prefers among those about the entity (the longer
    or shorter, the later or earlier one); the values are the current tail and the former one.
    Each rule has its mirror, so that a generator whose newer record is always the shorter one
    fails as surely as one whose newer record is always the longer."""
    v = row["verification"]
    head, relation = v["start_entity"], v["path"][0]
    values = {v["answer_entity"]} | {
        f["tail"] for f in world.former if f["head"] == head and f["relation"] == relation
    }
    head_name = _name_pattern(world.names[head])
    scores: dict[str, float] = {}
    offset = 0
    for doc in documents(row["document"]):
        if head_name.search(doc):
            for value in values:
                if _name_pattern(world.names[value]).search(doc):
                    score = CONFLICT_RULES[rule][1](len(doc), offset)
                    scores[value] = max(scores.get(value, -math.inf), score)
        offset += len(doc) + 2
    return _argmax_credit(scores, v["answer_entity"]) if len(scores) > 1 else 1 / max(1, len(values))


# --- text checks -------------------------------------------------------------------------------


def repeat_share(document: str) -> float:
    """Share of sentences that repeat an earlier sentence of the context exactly."""
    found = sentences(document)
    return (len(found) - len(set(found))) / max(1, len(found))


def comparison_chains(row: dict, world: AuditWorld) -> list[tuple[str, list[str], str]]:
    """(start, relations, end) of a comparison row's two chains, first-named first: `path` and
    `start_entity` join them with '|'; each end is found by traversal."""
    v = row["verification"]
    starts, path = v["start_entity"].split("|"), v["path"]
    cut = path.index("|")
    chains = []
    for start, relations in zip(starts, (path[:cut], path[cut + 1 :]), strict=True):
        end = start
        for relation in relations:
            end = _step(world, end, relation)
        chains.append((start, relations, end))
    return chains


def start_answer_pairs(row: dict, world: AuditWorld) -> list[tuple[str, str]]:
    """The (start, end) pairs no sentence may name together: the chain's, or each comparison
    chain's of 2+ hops."""
    v = row["verification"]
    if v.get("variant") == "comparison":
        chains = comparison_chains(row, world)
        return [(start, end) for start, relations, end in chains if len(relations) >= 2]
    return [(v["start_entity"], v["answer_entity"])]


def names_start_and_answer(row: dict, world: AuditWorld) -> bool:
    found = sentences(row["document"])
    for start, answer in start_answer_pairs(row, world):
        start_name, answer_name = _name_pattern(world.names[start]), _name_pattern(world.names[answer])
        if any(start_name.search(s) and answer_name.search(s) for s in found):
            return True
    return False


@cache
def dateline_patterns(language: str) -> tuple[re.Pattern, ...]:
    """Each dateline template of the language as a regex capturing the year."""
    lines = (TEMPLATES_DIR / language / "documents" / "dateline.jinja").read_text(encoding="utf-8")
    patterns = []
    for line in lines.splitlines():
        if line.strip() and not line.startswith("{#"):
            parts = _PLACEHOLDER.split(line.strip())  # literal, variable, literal, ...
            regex = "".join(
                re.escape(p) if k % 2 == 0 else (r"(\d{4})" if p == "year" else r".+?")
                for k, p in enumerate(parts)
            )
            patterns.append(re.compile(regex))
    return tuple(patterns)


def document_date(doc: str, language: str) -> int | None:
    for pattern in dateline_patterns(language):
        found = pattern.search(doc)
        if found:
            return int(found.group(1))
    return None


def anachronisms(document: str, language: str, quantities: frozenset[str] = frozenset()) -> list[str]:
    """Documents that state a year after their own date; `quantities` are numbers the world
    uses as counts or prices (2040 attendees is no year)."""
    found = []
    for doc in documents(document):
        date = document_date(doc, language)
        if date is not None and any(int(y) > date for y in _YEAR.findall(doc) if y not in quantities):
            found.append(doc.split("\n", 1)[0])
    return found


# --- the audit ---------------------------------------------------------------------------------


def load_rows(path: Path) -> tuple[list[dict], dict[str, AuditWorld]]:
    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise UserError(
            f"{path} is not a dataset (no dataset_dict.json)", "pass the --out folder of generate"
        )
    dataset = datasets.load_from_disk(str(path))
    rows = [row for split in dataset.values() for row in split.to_list()]
    worlds = {
        w: AuditWorld.load(path / "worlds" / f"{w}.json") for w in sorted({r["world_id"] for r in rows})
    }
    return rows, worlds


def is_chain_row(row: dict) -> bool:
    """Rows answered by an entity at the end of a chain: multihop, and cited grounding."""
    v = row["verification"]
    if not v.get("answer_entity") or v.get("variant") in ("counting", "comparison"):
        return False  # a count is a number; a comparison picks one of two people (`_comparison`)
    return row["task"] == "multihop" or (row["task"] == "grounding" and v.get("variant") == "cited")


def audit_rows(
    rows: list[dict], worlds: dict[str, AuditWorld], margin: float = MARGIN, attack_rows: int = ATTACK_ROWS
) -> list[AuditResult]:
    """Every baseline and text check over `rows` (each with its world), then the reward
    attacks over the first `attack_rows` rows by id."""
    results: list[AuditResult] = []
    prior = Counter(r["verification"]["answer_entity"] for r in rows if is_chain_row(r))
    for task in ("multihop", "grounding"):
        chained = [chain_row(r, worlds[r["world_id"]]) for r in rows if r["task"] == task and is_chain_row(r)]
        if not chained:
            continue
        label = task if task == "multihop" else "grounding/cited"
        for name, baseline in CHAIN_BASELINES.items():
            scored = [(s, 1 / len(c.candidates)) for c in chained if (s := baseline(c, prior)) is not None]
            if scored:
                value, base = fmean(s for s, _ in scored), fmean(b for _, b in scored)
                results.append(AuditResult(name, label, round(value, 4), round(base, 4), margin, len(scored)))
        few = sum(map(too_few_candidates, chained)) / len(chained)
        results.append(
            AuditResult("too few candidates of type", label, round(few, 4), 0.0, 0.0, len(chained))
        )
        multi = [c for c in chained if len(c.row["verification"]["path"]) >= 2]
        if multi:
            shortcut = sum(names_start_and_answer(c.row, c.world) for c in multi)
            results.append(AuditResult("sentence names start and answer", label, shortcut, 0, 0, len(multi)))
    results += _final_relation(rows)
    results += _counting(rows, margin)
    results += _comparison([(r, worlds[r["world_id"]]) for r in rows], margin)
    results += reward_attacks(sorted(rows, key=lambda r: r["id"])[:attack_rows])
    grounded = [(r, worlds[r["world_id"]]) for r in rows if r["task"] == "grounding"]
    answerable = [(r, w) for r, w in grounded if r["verification"]["variant"] in ("cited", "abstain")]
    if any(r["verification"]["variant"] == "abstain" for r, _ in answerable):
        f1, share = missing_document_f1(answerable)
        results.append(
            AuditResult(
                "abstain if no document",
                "grounding/abstain",
                round(f1, 4),
                round(share, 4),
                margin,
                len(answerable),
            )
        )
    conflicts = [(r, w) for r, w in grounded if r["verification"]["variant"] == "conflict"]
    for rule, (name, _) in CONFLICT_RULES.items():
        if conflicts:
            value = fmean(conflict_choice(r, w, rule) for r, w in conflicts)
            results.append(
                AuditResult(name, "grounding/conflict", round(value, 4), 0.5, margin, len(conflicts))
            )
    shares = [repeat_share(r["document"]) for r in rows]
    if rows:
        results.append(
            AuditResult(
                "exact repeats (worst context)", "all", round(max(shares), 4), 0.0, MAX_REPEATS, len(rows)
            )
        )
        late = sum(
            bool(anachronisms(r["document"], r["language"], worlds[r["world_id"]].quantities)) for r in rows
        )
        results.append(AuditResult("rows with an anachronism", "all", late, 0, 0, len(rows)))
    return results


def reward_attacks(rows: list[dict]) -> list[AuditResult]:
    """Mean reward of each attack of `longblocks.attacks` per task (all languages together),
    against `ATTACK_LIMIT`. Always abstaining earns the share of rows that expect abstention,
    its chance; every other attack's chance is 0."""
    from longblocks.attacks import reward_attack_table  # scoring every attack is the slow part

    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for record in reward_attack_table(rows):
        if record["attack"] == "reference":
            continue  # the gold response: `validate` requires full reward
        total = totals[record["attack"], record["task"]]
        total[0] += record["n"]
        total[1] += record["mean"] * record["n"]
    results = []
    for (attack, task), (n, value) in sorted(totals.items()):
        share = sum(r["verification"]["kind"] == "abstain" for r in rows if r["task"] == task) / max(
            1, sum(r["task"] == task for r in rows)
        )
        chance = round(share, 4) if attack == "always_abstain" else 0.0
        results.append(AuditResult(f"attack: {attack}", task, round(value / n, 4), chance, ATTACK_LIMIT, n))
    return results


def _counting(rows: list[dict], margin: float) -> list[AuditResult]:
    """'Always answer the most common count' (leave-one-out) against one guess among the
    counts the dataset uses."""
    counts = [r["answer"] for r in rows if r["verification"].get("variant") == "counting"]
    if not counts:
        return []
    tally = Counter(counts)
    hits = [_argmax_credit({c: n - (c == answer) for c, n in tally.items()}, answer) for answer in counts]
    chance = 1 / len(tally)
    return [
        AuditResult(
            "most common count",
            "multihop/counting",
            round(fmean(hits), 4),
            round(chance, 4),
            margin,
            len(counts),
        )
    ]


def _comparison(rows: list[tuple[dict, AuditWorld]], margin: float) -> list[AuditResult]:
    """Ways to pick one of the two people without reading their birth years, against 0.5: a
    position (first- or second-named), mention counts and first mentions in the context, and
    the final relation that ends on the elder most often in the other rows (founders and
    parents tend to be older than spouses and children)."""
    compared = []
    for row, world in rows:
        if row["verification"].get("variant") == "comparison":
            chains = comparison_chains(row, world)
            compared.append((row, world, [end for _, _, end in chains], [r[-1] for _, r, _ in chains]))
    if not compared:
        return []
    wins, seen = Counter(), Counter()
    for row, _, ends, finals in compared:
        for end, final in zip(ends, finals, strict=True):
            seen[final] += 1
            wins[final] += end == row["verification"]["answer_entity"]

    def relation_rate(final: str, row: dict, finals: list[str], ends: list[str]) -> float:
        # Leave the row itself (both its sides) out, so the rule is judged on rows it did not see.
        answer = row["verification"]["answer_entity"]
        others = seen[final] - finals.count(final)
        won = sum(f == final and e == answer for f, e in zip(finals, ends, strict=True))
        return (wins[final] - won) / others if others else 0.5

    scores: dict[str, list[float]] = defaultdict(list)
    for row, world, ends, finals in compared:
        answer, text = row["verification"]["answer_entity"], row["document"]
        found = {e: mentions(text, world.names[e]) for e in ends}
        scores["first-named"].append(float(ends[0] == answer))
        scores["second-named"].append(float(ends[1] == answer))
        scores["most-mentioned of the two"].append(_argmax_credit({e: len(found[e]) for e in ends}, answer))
        first = {e: -(found[e] or [len(text)])[0] for e in ends}
        scores["first-mentioned of the two"].append(_argmax_credit(first, answer))
        rates = {e: relation_rate(f, row, finals, ends) for e, f in zip(ends, finals, strict=True)}
        scores["final-relation prior"].append(_argmax_credit(rates, answer))
    results = [
        AuditResult(name, "multihop/comparison", round(fmean(values), 4), 0.5, margin, len(values))
        for name, values in scores.items()
    ]
    multi = [(row, world) for row, world, _, _ in compared if start_answer_pairs(row, world)]
    if multi:
        shortcut = sum(names_start_and_answer(row, world) for row, world in multi)
        results.append(
            AuditResult("sentence names start and answer", "multihop/comparison", shortcut, 0, 0, len(multi))
        )
    return results


def _final_relation(rows: list[dict]) -> list[AuditResult]:
    """The largest share of one final relation among the chains of a (split, length) bucket."""
    buckets: dict[tuple[str, int], Counter] = defaultdict(Counter)
    for r in rows:
        if is_chain_row(r) and r["task"] == "multihop":
            buckets[r["split"], r["length"]][r["verification"]["path"][-1]] += 1
            buckets["all", r["length"]][r["verification"]["path"][-1]] += 1
    counted = [c for c in buckets.values() if c.total() >= MIN_BUCKET]
    if not counted:
        return []
    worst = max(max(c.values()) / c.total() for c in counted)
    n = sum(c.total() for key, c in buckets.items() if key[0] == "all")
    return [
        AuditResult("most common final relation", "multihop", round(worst, 4), 0.0, MAX_FINAL_RELATION, n)
    ]


def audit(path: Path, margin: float = MARGIN) -> list[AuditResult]:
    """Audit the dataset saved at `path` (the --out of `longblocks generate`)."""
    rows, worlds = load_rows(path)
    return audit_rows(rows, worlds, margin)


def render_table(results: Iterable[AuditResult]) -> str:
    """A markdown table of the records, one per line."""
    lines = ["| check | rows | n | value | chance | limit | passed |", "|---|---|---:|---:|---:|---:|:---:|"]
    for r in results:
        lines.append(
            f"| {r.name} | {r.task} | {r.n} | {r.value:g} | {r.chance:g} | {r.limit:.4g} | "
            f"{'yes' if r.passed and r.judged else '**no**' if r.judged else f'n < {MIN_ROWS}'} |"
        )
    return "\n".join(lines)
