from longblocks.build import plan_worlds, split_counts
from longblocks.config import BuildConfig


def test_split_counts():
    assert split_counts(100, (0.8, 0.1, 0.1)) == [80, 10, 10]
    assert split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert split_counts(1, (0.8, 0.1, 0.1)) == [1, 0, 0]
    assert split_counts(10, (1.0, 0.0, 0.0)) == [10, 0, 0]


def test_plan_assigns_every_example_once_and_cycles_lengths():
    cfg = BuildConfig(lengths=[1024, 4096], num_examples=25, examples_per_world=4)
    jobs = plan_worlds(cfg)
    assert sum(len(j.lengths) for j in jobs) == 25
    lengths = [n for j in jobs for n in j.lengths]
    assert lengths.count(1024) == 13 and lengths.count(4096) == 12
    assert len({j.world_id for j in jobs}) == len(jobs)
    assert [j.split for j in jobs] == sorted(
        (j.split for j in jobs), key=["train", "validation", "test"].index
    )
    assert plan_worlds(cfg) == jobs


def test_splits_are_world_disjoint(tiny_rows):
    rows, worlds = tiny_rows
    world_of = {split: {r["world_id"] for r in split_rows} for split, split_rows in rows.items()}
    assert world_of["train"] and world_of["validation"] and world_of["test"]
    assert not world_of["train"] & world_of["validation"]
    assert not world_of["train"] & world_of["test"]
    assert not world_of["validation"] & world_of["test"]
    assert {r["split"] for r in rows["test"]} == {"test"}
    assert len(worlds) == 6  # train 10 examples in 4 worlds of <= 3, one world each for val/test


def test_rows_are_sized_and_self_describing(tiny_rows, tiny_config):
    rows, _ = tiny_rows
    for row in (r for split in rows.values() for r in split):
        assert row["length"] in tiny_config.lengths
        assert abs(row["n_tokens"] - row["length"]) <= row["length"] * 0.005
        assert row["tokenizer"] == "qwen3" and row["task"] == "multihop" and row["language"] == "en"
        depths = [e["depth"] for e in row["verification"]["evidence"]]
        assert abs(row["depth"] - sum(depths) / len(depths)) < 1e-3


def test_fixed_depths_are_respected():
    from longblocks.build import build

    # Eight rows: with nine decoy pointer documents at 4k, evidence aimed at 0.5 once landed at
    # 0.74 in one row of twelve.
    rows, _ = build(BuildConfig(lengths=[4096], num_examples=8, depth=[0.5], hops=[2], seed=1))
    for row in (r for split in rows.values() for r in split):
        for ref in row["verification"]["evidence"]:
            assert 0.35 < ref["depth"] < 0.65


def test_world_generation_restores_the_cyclic_collector(tiny_config):
    import gc

    from longblocks.build import generate_world

    job = plan_worlds(tiny_config)[0]
    generate_world(job, tiny_config)
    assert gc.isenabled()
    gc.disable()
    try:
        generate_world(job, tiny_config)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_context_the_sizer_cannot_fit_is_redrawn(graph, builder, monkeypatch):
    import pytest

    from longblocks.build import MAX_REDRAWS, MAX_SIZING_REDRAWS, WorldJob, generate_example
    from longblocks.errors import UserError
    from longblocks.render.context import ContextBuilder, EvidenceTooLong, SizingMiss

    build, calls = ContextBuilder.build, []

    def miss_twice(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise SizingMiss("context sized to 1000 tokens, target 1024 ± 5")
        return build(self, *args, **kwargs)

    monkeypatch.setattr(ContextBuilder, "build", miss_twice)
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (2048,), ("multihop",))
    row = generate_example(builder, job, 0, 2048, BuildConfig(lengths=[2048])).model_dump()
    assert len(calls) == 3 and row["n_tokens"] == 2048

    def always_miss(self, *args, **kwargs):
        calls.append(1)
        raise SizingMiss("context sized to 1000 tokens, target 1024 ± 5")

    calls.clear()
    monkeypatch.setattr(ContextBuilder, "build", always_miss)
    with pytest.raises(UserError, match="no context of 2048 tokens could be sized in 32 draws"):
        generate_example(builder, job, 0, 2048, BuildConfig(lengths=[2048]))
    assert len(calls) == MAX_SIZING_REDRAWS == 32

    def evidence_too_long(self, *args, **kwargs):
        calls.append(1)
        raise EvidenceTooLong("length 2048 is below what the evidence needs (3000 tokens)")

    calls.clear()
    monkeypatch.setattr(ContextBuilder, "build", evidence_too_long)
    with pytest.raises(EvidenceTooLong):
        generate_example(builder, job, 0, 2048, BuildConfig(lengths=[2048]))
    assert len(calls) == MAX_REDRAWS == 8


def test_a_chain_row_naming_too_few_of_its_answers_type_is_redrawn(graph, builder, monkeypatch):
    import pytest

    from longblocks import build
    from longblocks.build import WorldJob, audit_world, generate_example, too_few_candidates
    from longblocks.errors import UserError

    world = audit_world(graph)
    answer = world.of_fine_type("town")[0]
    peers = [world.names[e] for e in world.of_fine_type("town") if e != answer][:2]
    chain = {"answer_entity": answer, "variant": None}
    text = f"{world.names[answer]} lies in the hills. {peers[0]} lies on the coast."
    assert too_few_candidates(graph, "multihop", chain, text, 768)  # two towns, three needed
    assert not too_few_candidates(graph, "multihop", chain, f"{text} So does {peers[1]}.", 768)
    assert too_few_candidates(graph, "multihop", chain, f"{text} So does {peers[1]}.", 4096)  # five
    assert not too_few_candidates(graph, "longform", chain, text, 768)  # no answer entity to hide
    assert not too_few_candidates(graph, "multihop", {**chain, "variant": "counting"}, text, 768)

    calls = []

    def first_two_too_few(*args):
        calls.append(1)
        return len(calls) <= 2

    monkeypatch.setattr(build, "too_few_candidates", first_two_too_few)
    job = WorldJob(0, graph.world.id, graph.world.seed, "train", "en", (2048,), ("multihop",))
    assert generate_example(builder, job, 0, 2048, BuildConfig(lengths=[2048])).n_tokens == 2048
    assert len(calls) == 3
    monkeypatch.setattr(build, "too_few_candidates", lambda *args: True)
    with pytest.raises(UserError, match="too few entities of the answer's type named"):
        generate_example(builder, job, 0, 2048, BuildConfig(lengths=[2048]))
