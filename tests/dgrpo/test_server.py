"""`dgrpo serve`'s engine and routes through the openai client: token-id completions with
log-probs that equal the trainer's, seeds, prompt_logprobs, and errors in OpenAI's shape."""

import socket

import openai
import pytest
import torch

from dgrpo.cli import main
from dgrpo.logprobs import completion_logprobs, group_forward, lm_head_weight
from dgrpo.models import build_tiny, embedded_tokenizer
from dgrpo.server.engine import Engine
from dgrpo.server.http import ServerThread

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
PROMPT = [151644, 872, 198, 9064, 30, 151645, 198, 151644, 77091, 198]


@pytest.fixture(scope="module")
def model():
    return build_tiny("tiny-qwen3", 0).eval()


@pytest.fixture(scope="module")
def api(model):
    with ServerThread(Engine(model, embedded_tokenizer(), "policy")) as url:
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
        yield client
        client.close()


def complete(api, **params):
    extra = {"return_tokens_as_token_ids": True, **params.pop("extra_body", {})}
    return api.completions.create(model="policy", prompt=PROMPT, extra_body=extra, **params).model_dump()


def test_models_route(api):
    (card,) = api.models.list().data
    assert card.id == "policy"


def test_sampled_logprobs_are_the_trainers_at_the_sampling_temperature(api, model):
    out = complete(api, n=3, max_tokens=5, temperature=0.7, seed=11, logprobs=2)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    again = complete(api, n=3, max_tokens=5, temperature=0.7, seed=11, logprobs=2)
    assert [c["logprobs"]["tokens"] for c in out["choices"]] == [
        c["logprobs"]["tokens"] for c in again["choices"]
    ]
    for choice in out["choices"]:
        ids = [int(t.split(":")[1]) for t in choice["logprobs"]["tokens"]]
        completion = torch.tensor([ids])
        hidden = group_forward(model, torch.tensor([PROMPT]), completion, torch.ones_like(completion).bool(),
                               with_grad=False)  # fmt: skip
        want = completion_logprobs(hidden, lm_head_weight(model), completion, 0.7)[0]
        torch.testing.assert_close(
            torch.tensor(choice["logprobs"]["token_logprobs"]), want, atol=1e-5, rtol=0
        )
        top = choice["logprobs"]["top_logprobs"][0]  # the 2 likeliest plus the sampled token
        assert 2 <= len(top) <= 3 and choice["logprobs"]["tokens"][0] in top
        assert out["usage"]["completion_tokens"] >= len(ids)


def test_prompt_logprobs_cover_every_position_with_top_k(api, model):
    (choice,) = complete(api, max_tokens=1, extra_body={"prompt_logprobs": 3})["choices"]
    rows = choice["prompt_logprobs"]
    assert len(rows) == len(PROMPT) and rows[0] is None
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([PROMPT])).logits[0].double(), -1)
    for t in range(1, len(PROMPT)):
        entry = {int(k): v["logprob"] for k, v in rows[t].items()}
        top = logp[t - 1].topk(3)
        assert set(top.indices.tolist()) <= set(entry) and PROMPT[t] in entry
        assert entry[PROMPT[t]] == pytest.approx(logp[t - 1, PROMPT[t]].item(), abs=1e-5)


def test_greedy_is_temperature_zero_and_stops_at_eos(api):
    first = complete(api, max_tokens=6, temperature=0.0, logprobs=0)["choices"][0]
    second = complete(api, max_tokens=6, temperature=0.0, logprobs=0)["choices"][0]
    assert first["logprobs"]["tokens"] == second["logprobs"]["tokens"]
    assert first["finish_reason"] in ("stop", "length")


def test_bad_requests_are_openai_errors(api):
    with pytest.raises(openai.BadRequestError, match="echo is not supported"):
        complete(api, max_tokens=1, echo=True)
    with pytest.raises(openai.BadRequestError, match="logprobs must be in"):
        complete(api, max_tokens=1, extra_body={"prompt_logprobs": 5000})
    with pytest.raises(openai.NotFoundError):
        api.completions.create(model="nope", prompt=PROMPT, max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="call /start_weight_update"):
        api.post(
            str(api.base_url).removesuffix("/v1/") + "/update_weights",
            body={"update_info": {}},
            cast_to=object,
        )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--weight-transfer-config", '{"backend": "nccl"}'], "weight-transfer backend 'nccl' is not served"),
        (["--weight-transfer-config", "gloo"], "is not a JSON object"),
        (["--api-key-env", "DGRPO_NO_SUCH_VARIABLE"], "--api-key-env DGRPO_NO_SUCH_VARIABLE is not set"),
    ],
)
def test_serve_flags_are_checked_before_loading(flags, message, capsys):
    assert main(["serve", "tiny-qwen3", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgrpo: error:") and message in err and len(err.splitlines()) == 1


def test_serve_on_a_busy_port_is_one_error(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "tiny-qwen3", "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err
