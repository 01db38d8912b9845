"""The one server client: API key from the environment, the tokenizer probe, 4xx answers as one
error without retries, bounded concurrency; against `dgrpo serve` on 127.0.0.1."""

import threading
import time

import pytest

from dgrpo.config import ServerClientConfig
from dgrpo.errors import UserError
from dgrpo.models import build_tiny, embedded_tokenizer
from dgrpo.remote.client import ServerClient, check_tokenizer
from dgrpo.server.engine import Engine
from dgrpo.server.http import ServerThread

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def engine():
    return Engine(build_tiny("tiny-qwen3", 0), embedded_tokenizer(), "policy")


def client(url: str, model: str = "policy", **settings) -> ServerClient:
    return ServerClient(url, model, ServerClientConfig(**{"retries": 0, **settings}), "rollout")


def test_api_key_comes_from_the_named_variable(engine, monkeypatch):
    monkeypatch.setenv("SERVER_KEY", "sk-right")
    with ServerThread(engine, api_key="sk-right") as url:
        check_tokenizer(client(url, api_key_env="SERVER_KEY"), embedded_tokenizer())
        with pytest.raises(UserError, match="rejected /tokenize: HTTP 401: missing or wrong API key"):
            check_tokenizer(client(url), embedded_tokenizer())
    monkeypatch.delenv("SERVER_KEY")
    with pytest.raises(UserError, match="API key variable SERVER_KEY is not set"):
        client("http://127.0.0.1:9/v1", api_key_env="SERVER_KEY")


def test_a_server_with_another_tokenizer_is_refused(engine):
    class Shifted:  # the same text, other ids: a different vocabulary
        def __init__(self, inner):
            self.inner = inner

        def encode(self, text, add_special_tokens=True):
            return [i + 1 for i in self.inner.encode(text, add_special_tokens=add_special_tokens)]

        def decode(self, ids, **kwargs):
            return self.inner.decode(ids, **kwargs)

    other = Engine(engine.model, Shifted(embedded_tokenizer()), "policy")
    match = "rollout server tokenizes differently from the student"
    with ServerThread(other) as url, pytest.raises(UserError, match=match):
        check_tokenizer(client(url), embedded_tokenizer())


def test_client_errors_are_not_retried(engine):
    with ServerThread(engine) as url:
        wrong_model = client(url, model="other", retries=3, backoff_s=5.0)
        start = time.monotonic()
        with pytest.raises(
            UserError, match="rejected completions: HTTP 404: the model `other` does not exist"
        ):
            wrong_model.complete([[1, 2, 3]], max_tokens=1)
        assert time.monotonic() - start < 5.0  # no backoff sleep: a 4xx is final
        with pytest.raises(UserError, match="HTTP 400: RequestError: prompt must be token ids"):
            client(url).complete(["text prompts are refused"], max_tokens=1)  # type: ignore[list-item]


def test_concurrency_is_bounded():
    pool = ServerClient("http://127.0.0.1:9/v1", "m", ServerClientConfig(max_concurrency=2), "rollout")
    lock, live, peak = threading.Lock(), [0], [0]

    def request(i):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return i * i

    assert pool.map(request, list(range(7))) == [i * i for i in range(7)]
    assert peak[0] == 2
    pool.close()
