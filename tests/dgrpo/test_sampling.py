"""Sampling with one shared prompt K/V: same tokens as transformers' generate on G copies,
seeded by its own generator, under the training forward's autocast."""

from functools import partial

import pytest
import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from dgrpo.models import build_tiny
from dgrpo.sampling import draw, sample_completions

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def prompt(length=300, seed=0):
    return torch.randint(0, 150000, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("min_new", [0, 12])
def test_greedy_tokens_equal_generate_on_g_copies(min_new):
    model = build_tiny("tiny-qwen3", 0).eval()
    ids, rows, stops = prompt(), 4, [151645, 151643]
    with torch.no_grad():
        naive = model.generate(
            input_ids=ids.expand(rows, -1),
            attention_mask=torch.ones(rows, ids.shape[1], dtype=torch.long),
            max_new_tokens=12,
            min_new_tokens=min_new,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=151643,
        )[:, ids.shape[1] :]
    got = sample_completions(
        model, ids, rows, max_new_tokens=12, min_new_tokens=min_new, stop_ids=stops, pad_id=151643,
        greedy=True,
    )  # fmt: skip
    assert torch.equal(got, naive)


def test_rows_stop_at_a_stop_token_and_are_padded_after_it():
    model = build_tiny("tiny-qwen3", 0).eval()
    ids = prompt(40, seed=3)
    torch.manual_seed(0)
    first = sample_completions(model, ids, 1, max_new_tokens=1, stop_ids=[1], pad_id=0, greedy=True)[0, 0]
    stop = int(first)  # the greedy first token is made the stop token: every row stops at once
    got = sample_completions(model, ids, 3, max_new_tokens=8, stop_ids=[stop], pad_id=7, greedy=True)
    assert got.shape == (3, 1) and (got == stop).all()
    blocked = sample_completions(
        model, ids, 3, max_new_tokens=8, min_new_tokens=8, stop_ids=[stop], pad_id=7, greedy=True
    )
    assert blocked.shape == (3, 8) and not (blocked == stop).any()


def test_sampling_is_seeded_and_rows_differ():
    model = build_tiny("tiny-qwen3", 0).eval()
    ids = prompt(50)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(sample_completions(model, ids, 4, max_new_tokens=6, stop_ids=[151645], pad_id=151643))
    assert torch.equal(runs[0], runs[1])
    assert len({tuple(row.tolist()) for row in runs[0]}) > 1  # τ = 1 over a 151k vocabulary


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.3), (40, 0.9), (0, 1.0)])
def test_draw_keeps_what_transformers_warpers_keep(top_k, top_p):
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(1)) * 3
    scaled = logits / 0.7
    if top_k:
        scaled = TopKLogitsWarper(top_k)(None, scaled)
    if top_p < 1:
        scaled = TopPLogitsWarper(top_p)(None, scaled)
    allowed = torch.isfinite(scaled)
    torch.manual_seed(0)
    drawn = torch.stack([draw(logits, 0.7, top_k, top_p) for _ in range(400)], dim=1)
    assert allowed.gather(1, drawn).all()
    if top_k == 0 and top_p == 1.0:
        return
    # every allowed token with probability ≥ 5% shows up in 400 draws
    probs = scaled.softmax(-1)
    frequent = probs >= 0.05
    hit = torch.zeros_like(allowed).scatter(1, drawn, True)
    assert (hit | ~frequent).all()


def test_draw_nucleus_on_known_probabilities():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    torch.manual_seed(0)
    drawn = {int(draw(logits, 1.0, 0, 0.75)) for _ in range(200)}
    assert drawn == {0, 1}  # 0.5 + 0.3 reaches 0.75: the smallest such set


def test_draw_frequencies_follow_softmax_at_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    want = (logits / 0.8).softmax(-1)[0]
    torch.manual_seed(0)
    drawn = torch.stack([draw(logits.expand(500, -1), 0.8) for _ in range(20)]).flatten()
    freq = torch.bincount(drawn, minlength=5).float() / drawn.numel()
    torch.testing.assert_close(freq, want, atol=0.015, rtol=0)  # 10,000 draws: ~3.5 std errors


def test_a_generator_makes_the_draws_independent_of_the_global_rng():
    model = build_tiny("tiny-qwen3", 0).eval()
    ids, runs = prompt(50), []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        generator = torch.Generator().manual_seed(9)
        runs.append(
            sample_completions(
                model, ids, 3, max_new_tokens=5, stop_ids=[151645], pad_id=0, generator=generator
            )
        )
    assert torch.equal(runs[0], runs[1])


def test_the_decoder_samples_under_the_training_autocast():
    """Sampling runs every decoder call under the autocast the training forward uses, so the
    sampled policy is the one whose log-probs the objective computes."""
    model = build_tiny("tiny-qwen3", 0).eval()
    seen = []
    hook = model.model.layers[0].register_forward_hook(
        lambda module, args, out: seen.append(torch.is_autocast_enabled("cpu"))
    )
    autocast = partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    try:
        sample_completions(
            model, prompt(30), 2, max_new_tokens=4, stop_ids=[151645], pad_id=0, autocast=autocast
        )
    finally:
        hook.remove()
    assert seen == [True] * 4  # the prompt, then 3 decoding steps (the 4th token needs no forward)
