"""`longblocks.audit`: the baselines find a planted shortcut, the text checks find what a reader
would flag, and a generated dataset passes."""

import json

import pytest

from longblocks import audit, io
from longblocks.audit import AuditResult, AuditWorld, audit_rows
from longblocks.build import build
from longblocks.cli import main
from longblocks.config import BuildConfig
from longblocks.render.documents import Renderer
from longblocks.world.graph import WorldGraph, WorldSize, build_world


def _world() -> AuditWorld:
    towns = [{"id": f"place:{i}", "type": "place", "name": f"Town{i}"} for i in range(5)]
    region = [{"id": "place:9", "type": "place", "name": "Vale"}]
    people = [{"id": f"person:{i}", "type": "person", "name": f"Ann {chr(65 + i)}"} for i in range(6)]
    facts = [
        {
            "id": f"f{i}",
            "relation": "lives_in",
            "head": f"person:{i}",
            "tail": f"place:{i % 5}",
            "attributes": {},
        }
        for i in range(6)
    ]
    facts += [
        {"id": f"g{i}", "relation": "located_in", "head": f"place:{i}", "tail": "place:9", "attributes": {}}
        for i in range(5)
    ]
    facts.append(
        {"id": "m", "relation": "married_to", "head": "person:5", "tail": "person:0", "attributes": {}}
    )
    return AuditWorld.from_data({"entities": towns + region + people, "facts": facts})


def _row(document: str, answer: str = "place:0", language: str = "en") -> dict:
    verification = {
        "kind": "exact",
        "variant": "",
        "path": ["married_to", "lives_in"],
        "start_entity": "person:5",
        "answer_entity": answer,
        "answer": "",
        "evidence": [],
    }
    return {"task": "multihop", "length": 4096, "language": language, "document": document, "split": "train",
            "world_id": "w", "answer": "", "verification": verification}  # fmt: skip


def test_fine_types_come_from_the_graph():
    world = _world()
    assert world.fine["place:0"] == "town" and world.fine["place:9"] == "region"
    assert len(world.of_fine_type("town")) == 5


def test_most_mentioned_finds_a_planted_shortcut():
    # The answer Town0 is named three times, every other town once: reading counts gives it away.
    document = (
        "[D1000] Notes\nTown0 is old. Town0 is big. Town0 is far. Town1 and Town2 and Town3 and Town4 exist."
    )
    chained = audit.chain_row(_row(document), _world())
    assert set(chained.candidates) == {f"place:{i}" for i in range(5)}
    assert audit.most_mentioned(chained, audit.Counter()) == 1.0
    assert audit.first_mentioned(chained, audit.Counter()) == 1.0
    assert audit.last_mentioned(chained, audit.Counter()) == 0.0


def test_ties_split_the_credit():
    document = "[D1000] Notes\nTown0 and Town1 and Town2 and Town3 and Town4 are towns."
    chained = audit.chain_row(_row(document), _world())
    assert audit.most_mentioned(chained, audit.Counter()) == pytest.approx(0.2)


def test_last_hop_document_length_finds_an_evidence_document_cut_to_its_sentence():
    # Each town is named once through lives_in (the final relation), but only the answer's
    # document is cut down to that sentence: its length gives the answer away, in either sense.
    filler = " It has a long history of trade and song." * 5
    document = "\n\n".join([
        "[D1000] Ann A\nAnn A lives in Town0.",
        f"[D2000] Ann B\nAnn B lives in Town1.{filler}",
        f"[D3000] Ann C\nAnn C lives in Town2.{filler} And more.",
        "[D4000] Towns\nTown3 and Town4 are towns.",
    ])  # fmt: skip
    chained = audit.chain_row(_row(document), _world())
    assert audit.last_hop_most_mentioned(chained, audit.Counter()) == pytest.approx(1 / 3)
    assert audit.shortest_pointer_document(chained, audit.Counter()) == 1.0
    assert audit.longest_pointer_document(chained, audit.Counter()) == 0.0
    reverse = document.replace("Ann A lives in Town0.", f"Ann A lives in Town0.{filler} Even more of it.")
    chained = audit.chain_row(_row(reverse), _world())
    assert audit.shortest_pointer_document(chained, audit.Counter()) == 0.0
    assert audit.longest_pointer_document(chained, audit.Counter()) == 1.0


def test_conflict_rules_have_mirrors():
    # The current record (Town0) is always the shorter, earlier document: "longer" and "later"
    # score 0, and only their mirrors show that the length and the position give it away.
    world = _world()
    world.former.append({"id": "old", "relation": "lives_in", "head": "person:5", "tail": "place:1",
                         "attributes": {"until": 1990}})  # fmt: skip
    row = _row("[D1000] Now\nAnn F lives in Town0.\n\n[D2000] Then\nAnn F lived in Town1 for many years.")
    row["verification"].update(variant="conflict", path=["lives_in"])
    world.facts.append({"id": "now", "relation": "lives_in", "head": "person:5", "tail": "place:0",
                        "attributes": {}})  # fmt: skip
    choices = {rule: audit.conflict_choice(row, world, rule) for rule in audit.CONFLICT_RULES}
    assert choices == {"longer": 0.0, "shorter": 1.0, "later": 0.0, "earlier": 1.0}


def test_a_sentence_naming_start_and_answer_is_flagged():
    world = _world()
    assert audit.names_start_and_answer(_row("[D1000] X\nAnn F once visited Town0."), world)
    assert not audit.names_start_and_answer(
        _row("[D1000] X\nAnn F married Ann A. Ann A lives in Town0."), world
    )


def test_comparison_baselines_find_a_winner_always_named_first():
    # Ann A (person:0) always wins and is named first, and more often: position and mention
    # counts give her away, the final relation (married_to on both sides) does not.
    row = _row("[D1000] X\nAnn A met Ann F. Ann A was born in 1900, the other in 1910.", answer="person:0")
    row["verification"].update(variant="comparison", path=["married_to", "|", "married_to"],
                               start_entity="person:5|person:0")  # fmt: skip
    world = _world()
    assert [end for _, _, end in audit.comparison_chains(row, world)] == ["person:0", "person:5"]
    results = {r.name: r for r in audit._comparison([(row, world)] * 60, 0.1)}
    assert results["first-named"].value == 1.0 and not results["first-named"].passed
    assert results["second-named"].value == 0.0 and results["first-named"].chance == 0.5
    assert results["most-mentioned of the two"].value == 1.0
    assert results["first-mentioned of the two"].value == 1.0
    assert results["final-relation prior"].value == 0.5
    assert "sentence names start and answer" not in results  # one-hop chains may name both


def test_repeats_and_anachronisms():
    repeated = "[D1000] A\nOne fact. Two facts. One fact.\n\n[D2000] B\nOther."
    assert audit.repeat_share(repeated) == pytest.approx(1 / 6)  # titles count as sentences
    late = "[D1000] Biography of Ann A\nThis record of Ann A is dated 1980. Ann A moved in 1992."
    fine = "[D1000] Biography of Ann A\nThis record of Ann A is dated 1995. Ann A moved in 1992."
    assert audit.anachronisms(late, "en") == ["[D1000] Biography of Ann A"]
    assert audit.anachronisms(fine, "en") == []
    crowd = fine + " The fair drew 2040 visitors."
    assert audit.anachronisms(crowd, "en") and audit.anachronisms(crowd, "en", frozenset({"2040"})) == []


@pytest.mark.parametrize("language", ["en", "pt", "de"])
def test_every_dateline_reads_back_its_year(language):
    graph = WorldGraph(build_world("w", 2, language, WorldSize(people=60)))
    renderer = Renderer(graph)
    entity = graph.world.entities[0].id
    years = set()
    for k in range(60):
        doc = renderer.dated_document(entity, [], 1901 + k, key=f"k{k}")
        assert audit.document_date(doc.header, language) == 1901 + k
        years.add(doc.header)
    assert len(years) == 60


def test_the_generator_asks_for_at_least_the_candidates_the_audit_judges():
    from longblocks.tasks.chains import min_candidates

    for length in (256, 1024, 4095, 4096, 8191, 8192, 32768, 65536, 131072):
        assert min_candidates(length) >= audit.min_candidates(length)
    assert (min_candidates(131072), audit.min_candidates(131072)) == (32, 8)


def test_a_record_passes_within_chance_plus_margin_and_small_samples_are_not_judged():
    assert AuditResult("b", "t", 0.3, 0.2, 0.1, 1000).passed
    assert not AuditResult("b", "t", 0.31, 0.2, 0.1, 1000).passed
    small = AuditResult("b", "t", 0.9, 0.2, 0.1, 10)
    assert small.passed and not small.judged
    assert not AuditResult("exact", "t", 1, 0, 0, 3).passed  # exact counts are judged at any size


def test_on_few_rows_the_limit_allows_the_noise_of_a_fair_guess():
    # 71 comparisons: a fair coin's standard error is 0.059, so 3 of them (0.178) outweigh the margin.
    few = AuditResult("first-named", "t", 0.62, 0.5, 0.1, 71)
    assert few.limit == pytest.approx(0.5 + 3 * (0.25 / 71) ** 0.5) and few.passed
    assert not AuditResult("first-named", "t", 0.70, 0.5, 0.1, 71).passed
    assert AuditResult("first-named", "t", 0.62, 0.5, 0.1, 438).limit == pytest.approx(0.6)  # margin decides
    assert AuditResult("exact", "t", 0.0, 0, 0.03, 5).limit == 0.03  # no chance, no noise
    record = AuditResult("b", "t", 0.5, 0.5, 0.1, 60).as_dict()
    assert record["limit"] == round(0.5 + 3 * (0.25 / 60) ** 0.5, 4)
    assert AuditResult("b", "t", 0.5, 0.5, 0.1, 2).limit == 1.0


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = BuildConfig(
        task="all", lengths=[4096], num_examples=24, examples_per_world=8, seed=5, languages=["en", "de"]
    )
    out = tmp_path_factory.mktemp("audit") / "data"
    io.save(*build(cfg), cfg, out, overwrite=False)
    return out


def test_generated_dataset_has_no_exact_shortcut_and_the_saved_audit_matches(saved):
    results = audit.audit(saved)
    by_name = {(r.task, r.name): r for r in results}
    assert by_name["multihop", "sentence names start and answer"].value == 0
    assert by_name["all", "rows with an anachronism"].value == 0
    assert by_name["all", "exact repeats (worst context)"].value <= audit.MAX_REPEATS
    assert by_name["multihop", "too few candidates of type"].value == 0
    saved_records = json.loads((saved / audit.AUDIT_FILE).read_text())
    assert saved_records == [r.as_dict() for r in results]
    card = (saved / "README.md").read_text()
    assert "## Shortcut audit" in card and "| most-mentioned of type | multihop |" in card
    assert (saved / "assets" / "audit.png").stat().st_size > 1000


def test_cli_audit_exit_codes(saved, tmp_path, capsys, monkeypatch):
    out = tmp_path / "audit.json"
    assert main(["audit", str(saved), "--json", str(out)]) == 0
    assert "| check |" in capsys.readouterr().out and json.loads(out.read_text())
    # Judged on any number of rows and without a noise allowance, a margin below zero puts every
    # baseline over its limit.
    monkeypatch.setattr(audit, "MIN_ROWS", 1)
    monkeypatch.setattr(audit, "NOISE_Z", 0.0)
    assert main(["audit", str(saved), "--margin", "-1"]) == 1
    assert main(["audit", str(tmp_path / "nowhere")]) == 2


def test_audit_rows_on_its_own_worlds(saved):
    rows, worlds = audit.load_rows(saved)
    assert audit_rows(rows, worlds) == audit.audit(saved)
