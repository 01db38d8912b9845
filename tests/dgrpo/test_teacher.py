"""Teachers: local scoring equals a naive full-logits computation; the remote teacher reads the
same numbers from `dgrpo serve` on 127.0.0.1 (vLLM's prompt_logprobs), within 1e-4."""

import pytest
import torch

from dgrpo.config import ServerClientConfig, TeacherConfig
from dgrpo.errors import UserError
from dgrpo.models import build_tiny, embedded_tokenizer
from dgrpo.remote.client import ServerClient, ServerUnavailableError
from dgrpo.remote.teacher import RemoteTeacher, position_logprobs
from dgrpo.server.engine import Engine
from dgrpo.server.http import ServerThread
from dgrpo.teacher import LocalTeacher

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


@pytest.fixture
def server(model):
    """`dgrpo serve` of the teacher model on 127.0.0.1 (a thread of this process)."""
    with ServerThread(Engine(model, embedded_tokenizer(), "teacher")) as url:
        yield url


def remote_teacher(url: str, batch_size: int = 8, retries: int = 0) -> RemoteTeacher:
    server = ServerClientConfig(batch_size=batch_size, retries=retries, backoff_s=0.01)
    cfg = TeacherConfig(url=url, served_model="teacher", top_k=K, server=server)
    return RemoteTeacher.connect(cfg, embedded_tokenizer(), vocab_rows=151936)


@pytest.mark.parametrize("batch_size", [1, 8], ids=["request-per-sequence", "one-request"])
def test_remote_teacher_matches_the_local_one(model, group, server, batch_size):
    prompt, completions, mask = group
    need = frozenset({"logp", "topk"})
    remote = remote_teacher(server, batch_size).score(prompt, completions, mask, need, 1.0)
    local = LocalTeacher(model, top_k=K, chunk_size=4).score(prompt, completions, mask, need, 1.0)
    assert (remote.logp[mask] - local.logp[mask]).abs().max() < 1e-4
    assert torch.equal(remote.topk_ids[mask], local.topk_ids[mask])
    assert (remote.topk_logp[mask] - local.topk_logp[mask]).abs().max() < 1e-4
    only_logp = remote_teacher(server).score(prompt, completions, mask, frozenset({"logp"}), 1.0)
    assert only_logp.topk_ids is None
    torch.testing.assert_close(only_logp.logp, remote.logp, atol=1e-5, rtol=0)


def test_prompt_logprobs_are_required():
    choice = {"prompt_logprobs": [None, {"7": {"logprob": -1.5, "rank": 1}}]}
    assert position_logprobs(choice, 2) == [{}, {7: -1.5}]
    with pytest.raises(UserError, match="teacher server returned no prompt_logprobs"):
        position_logprobs({"text": "x", "logprobs": None}, 3)


def test_unreachable_server_is_one_user_error_after_the_retries(group, caplog):
    cfg = TeacherConfig(url="http://127.0.0.1:9/v1", server=ServerClientConfig(retries=2, backoff_s=0.01))
    teacher = RemoteTeacher(ServerClient(cfg.url, "teacher", cfg.server, "teacher"), K, 151936)
    with pytest.raises(ServerUnavailableError, match="teacher server http://127.0.0.1:9/v1 failed 3 times"):
        teacher.score(*group, frozenset({"logp"}), 1.0)
    assert sum("retrying in" in record.message for record in caplog.records) == 2
