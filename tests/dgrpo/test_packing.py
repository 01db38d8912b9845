"""Token-budget micro-batches: every row lands once, budgets hold, and the gradient of a step
does not depend on how its batch was cut."""

import json
from pathlib import Path

import pytest
import torch

from dgrpo.data import Example
from dgrpo.packing import batch_totals, forward_tokens, micro_batches, split_rows
from dgrpo.rollout import Group
from dgrpo.trainer import train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def group(prompt_len: int, rows: int, width: int, tag: int = 0) -> Group:
    """A scored group whose completion ids encode (tag, row) so pieces can be traced back."""
    ids = torch.arange(rows)[:, None].expand(rows, width) + 1000 * tag
    mask = torch.ones(rows, width, dtype=torch.bool)
    mask[-1, width // 2 :] = False  # the last row is shorter
    example = Example(index=tag, id=str(tag), prompt_ids=[1] * prompt_len, response_ids=None,
                      verification=None, task="multihop", length=prompt_len, depth=0.5)  # fmt: skip
    return Group(
        example, torch.ones(1, prompt_len, dtype=torch.long), ids, mask, torch.zeros(rows, dtype=torch.bool),
        [f"{tag}:{r}" for r in range(rows)], rewards=torch.arange(rows).float(), statuses=["ok"] * rows,
        loss_mask=mask, adv=torch.linspace(-1, 1, rows),
    )  # fmt: skip


def test_forward_tokens_counts_the_prompt_once():
    assert forward_tokens(group(100, 8, 5)) == 100 + 8 * 5


def test_split_rows_slices_every_field_consistently():
    whole = group(100, 7, 10, tag=3)
    pieces = split_rows(whole, budget=100 + 3 * 10)
    assert [p.size for p in pieces] == [3, 3, 1]
    assert all(forward_tokens(p) <= 130 for p in pieces)
    assert torch.equal(torch.cat([p.completion_ids for p in pieces]), whole.completion_ids)
    assert torch.equal(torch.cat([p.adv for p in pieces]), whole.adv)
    assert [t for p in pieces for t in p.texts] == whole.texts
    assert pieces[-1].loss_mask[0].sum() == 5 and pieces[0].prompt_ids is whole.prompt_ids
    assert split_rows(whole, budget=10**6) == [whole]
    assert [p.size for p in split_rows(whole, budget=50)] == [1] * 7  # even one row is over: one each


def test_micro_batches_first_fit_decreasing_within_budget():
    groups = [group(100, 4, 10, tag=i) for i in range(5)] + [group(900, 2, 10, tag=9)]
    bins = micro_batches(groups, budget=300)
    texts = sorted(t for b in bins for p in b for t in p.texts)
    assert texts == sorted(t for g in groups for t in g.texts)  # every row exactly once
    costs = [sum(forward_tokens(p) for p in b) for b in bins]
    # the 900-token prompt's rows are over budget even alone: one micro-batch each; then two
    # 140-token groups per 300-token micro-batch
    assert costs == [910, 910, 280, 280, 140]


def test_batch_totals_count_rows_and_loss_tokens():
    groups = [group(100, 4, 10), group(50, 2, 6)]
    totals = batch_totals(groups)
    assert totals.rows == 6 and totals.tokens == (3 * 10 + 5) + (6 + 3)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("aggregation", ["token", "seq", "constant"])
def test_step_does_not_depend_on_micro_batch_budget(make_run_config, aggregation):
    """One micro-batch, one group per micro-batch, and groups split into row slices give the
    same loss and gradient norm (the loss is normalised over the whole step)."""
    runs = {}
    for budget in (10**6, 1100, 1040):  # 1k prompts, G=3, C<=6: 1040 leaves room for 2 rows
        cfg = make_run_config(
            "dgrpo",
            out=f"run-{budget}",
            data={"batch_size": 2},
            rollout={"group_size": 3},
            optim={"grad_accum": 2, "micro_batch_tokens": budget},
            loss={"aggregation": aggregation, "beta": 0.05},
        )
        runs[budget] = metrics(train(cfg))
    whole, per_group, sliced = runs[10**6], runs[1100], runs[1040]
    assert [r["micro_batches"] for r in (whole[0], per_group[0], sliced[0])] == [1, 4, 8]
    for other in (per_group, sliced):
        for key in ("loss", "loss/pg", "loss/opd_full", "loss/ref_kl", "grad_norm"):
            assert other[0][key] == pytest.approx(whole[0][key], rel=1e-4, abs=1e-6), key
        assert other[1]["loss"] == pytest.approx(whole[1]["loss"], rel=1e-3, abs=1e-5)
