"""Teachers: local scoring equals a naive full-logits computation; the remote teacher parses a
vLLM-style server (a fake one on 127.0.0.1, in-process) into the same numbers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dgrpo.errors import UserError
from dgrpo.models import build_tiny
from dgrpo.teacher import LocalTeacher, RemoteTeacher

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
K = 5


@pytest.fixture(scope="module")
def model():
    return build_tiny("tiny-qwen3-teacher", 1).eval()


@pytest.fixture
def group():
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 151000, (1, 7), generator=gen)
    completions = torch.randint(0, 151000, (3, 5), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return prompt, completions.masked_fill(~mask, 151643), mask


def naive_logprobs(model, prompt, completions, mask, temperature):
    """log_softmax over the full [L, V] logits of each whole sequence, the slow way."""
    out = torch.zeros(completions.shape, dtype=torch.float64)
    tops = []
    for g in range(completions.shape[0]):
        n = int(mask[g].sum())
        ids = torch.cat([prompt[0], completions[g, :n]])[None]
        with torch.no_grad():
            logits = model(ids).logits[0].double()
        logp = torch.log_softmax(logits / temperature, -1)[prompt.shape[1] - 1 : -1]
        out[g, :n] = logp.gather(1, completions[g, :n, None]).squeeze(1)
        tops.append(logp.topk(K, -1))  # at τ too: the topk estimator's tail needs Z_τ
    return out, tops


def test_local_teacher_matches_naive(model, group):
    prompt, completions, mask = group
    signals = LocalTeacher(model, top_k=K, chunk_size=3).score(
        prompt, completions, mask, frozenset({"hidden", "logp", "topk"}), temperature=0.7
    )
    want, tops = naive_logprobs(model, prompt, completions, mask, 0.7)
    torch.testing.assert_close(signals.logp.double()[mask], want[mask], rtol=1e-4, atol=1e-4)
    for g, top in enumerate(tops):
        n = int(mask[g].sum())
        assert torch.equal(signals.topk_ids[g, :n], top.indices)
        torch.testing.assert_close(signals.topk_logp[g, :n].double(), top.values, rtol=1e-4, atol=1e-4)
    assert signals.hidden.shape == (3, 5, 64) and not signals.hidden.requires_grad
    only_logp = LocalTeacher(model, K, 3).score(prompt, completions, mask, frozenset({"logp"}), 1.0)
    assert only_logp.hidden is None and only_logp.topk_ids is None


class FakeVLLM(BaseHTTPRequestHandler):
    """POST /v1/completions with token-id prompts: answers with prompt_logprobs (vLLM) computed
    by a local model, or with OpenAI echo logprobs when the server is in `echo_only` mode."""

    model = None
    echo_only = False
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        choices = [self._choice(i, seq, body["prompt_logprobs"]) for i, seq in enumerate(body["prompt"])]
        payload = json.dumps({"object": "text_completion", "choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _choice(self, index, sequence, top_k):
        with torch.no_grad():
            logp = torch.log_softmax(self.model(torch.tensor([sequence])).logits[0].double(), -1)
        if self.echo_only:
            values = [None] + [logp[t - 1, tok].item() for t, tok in enumerate(sequence) if t > 0]
            return {
                "index": index,
                "logprobs": {"tokens": [f"token_id:{t}" for t in sequence], "token_logprobs": values},
            }
        rows = [None]
        for t in range(1, len(sequence)):
            top = logp[t - 1].topk(top_k) if top_k else None
            entry = (
                {
                    str(i): {"logprob": v, "rank": r + 1}
                    for r, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True))
                }
                if top_k
                else {}
            )  # noqa: E501
            entry[str(sequence[t])] = {"logprob": logp[t - 1, sequence[t]].item(), "rank": 0}
            rows.append(entry)
        return {"index": index, "text": "x", "prompt_logprobs": rows}

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server(model):
    FakeVLLM.model, FakeVLLM.echo_only, FakeVLLM.requests = model, False, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeVLLM)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_remote_teacher_matches_the_local_one(model, group, server):
    prompt, completions, mask = group
    need = frozenset({"logp", "topk"})
    remote = RemoteTeacher(server, "teacher", top_k=K, timeout_s=30).score(
        prompt, completions, mask, need, 1.0
    )
    local = LocalTeacher(model, top_k=K, chunk_size=4).score(prompt, completions, mask, need, 1.0)
    torch.testing.assert_close(remote.logp[mask], local.logp[mask], rtol=1e-4, atol=1e-4)
    assert torch.equal(remote.topk_ids[mask], local.topk_ids[mask])
    torch.testing.assert_close(remote.topk_logp[mask], local.topk_logp[mask], rtol=1e-4, atol=1e-4)
    (request,) = FakeVLLM.requests  # one request per group, token ids in, prompt log-probs out
    assert request["prompt"][1] == prompt[0].tolist() + completions[1, :3].tolist()
    assert request["prompt_logprobs"] == K and request["model"] == "teacher"


def test_remote_teacher_reads_openai_echo_logprobs(model, group, server):
    FakeVLLM.echo_only = True
    prompt, completions, mask = group
    remote = RemoteTeacher(server, "teacher", K, 30).score(
        prompt, completions, mask, frozenset({"logp"}), 1.0
    )
    local = LocalTeacher(model, K, 4).score(prompt, completions, mask, frozenset({"logp"}), 1.0)
    torch.testing.assert_close(remote.logp[mask], local.logp[mask], rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="returned 1 < 5 top log-probs"):  # echo carries no top-k
        RemoteTeacher(server, "teacher", K, 30).score(
            prompt, completions, mask, frozenset({"logp", "topk"}), 1.0
        )


def test_unreachable_server_is_a_user_error(group):
    with pytest.raises(UserError, match="teacher server http://127.0.0.1:9/v1/completions failed"):
        RemoteTeacher("http://127.0.0.1:9/v1", "teacher", K, 5).score(*group, frozenset({"logp"}), 1.0)
