"""One client for every server request: the `openai` package, with retries, backoff and bounded
concurrency, and a probe that the server tokenizes like the student.

Completions go through `client.completions.create` (token-id prompts; vLLM's extra fields such as
`prompt_logprobs`, `top_k` and `return_tokens_as_token_ids` ride in `extra_body`). The routes
outside the OpenAI API (vLLM's `/tokenize`, `/detokenize` and weight-transfer routes) go through
the same client's `post`, at the server root. The API key is read from the environment variable
the config names and lives only in the `openai.OpenAI` object.
"""

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import openai

from dgrpo.config import ServerClientConfig
from dgrpo.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Errors worth another try: the server is down, slow, overloaded or failed transiently.
_TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
# Text with special tokens, accents, CJK and digits: tokenizers that differ almost surely split it
# differently, or give other ids to the same pieces.
PROBE_TEXT = "<|im_start|>user\nGrüße aus Zürich: 東京 12,345.6 km² — ok?<|im_end|>\n<|endoftext|>"


class ServerUnavailableError(UserError):
    """The server did not answer after every retry (it died, or the URL is wrong)."""


class ServerClient:
    """Requests to one OpenAI-compatible server, as `role` ("rollout" or "teacher") sees it."""

    def __init__(self, url: str, model: str, cfg: ServerClientConfig, role: str):
        self.url, self.model, self.cfg, self.role = url.rstrip("/"), model, cfg, role
        self.root = self.url.removesuffix("/v1")
        self._client = openai.OpenAI(
            base_url=self.url, api_key=_api_key(cfg.api_key_env, role), timeout=cfg.timeout_s, max_retries=0
        )
        self._pool = ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix=f"{role}-requests")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def complete(self, prompts: list[list[int]], **params) -> list[dict]:
        """The choices of one completions request for token-id `prompts`, ordered by index.
        `params` are completions fields; vLLM-only ones go in `extra_body`."""
        # the raw response's JSON: building openai's pydantic objects for thousands of
        # prompt_logprobs entries costs more than the request itself
        response = self._retry(
            "completions",
            lambda: self._client.completions.with_raw_response.create(
                model=self.model, prompt=prompts, **params
            ),
        )
        choices = sorted(response.http_response.json()["choices"], key=lambda choice: choice["index"])
        expected = len(prompts) * params.get("n", 1)
        if len(choices) != expected:
            raise UserError(f"{self.role} server answered {len(choices)} of {expected} completions", self.fix)
        return choices

    def post(self, route: str, body: dict, timeout_s: float | None = None) -> dict:
        """POST a JSON body to a route at the server root (outside /v1), e.g. /tokenize."""
        return self._retry(
            route,
            lambda: self._client.post(
                self.root + route,
                body=body,
                cast_to=object,
                options={"timeout": timeout_s or self.cfg.timeout_s},
            ),
        )

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """fn over items with at most max_concurrency requests in flight; results in order."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))

    def _retry(self, what: str, call: Callable[[], R]) -> R:
        """call() with retries and exponential backoff on transient errors; one UserError else."""
        tries = self.cfg.retries + 1
        for attempt in range(tries):
            try:
                return call()
            except _TRANSIENT as err:
                if attempt == tries - 1:
                    raise ServerUnavailableError(
                        f"{self.role} server {self.url} failed {tries} times on {what}: {_describe(err)}",
                        f"{self.fix}; then rerun with --resume",
                    ) from None
                delay = self.cfg.backoff_s * 2**attempt
                log.warning("%s server %s: %s; retrying in %.1fs", self.role, what, _describe(err), delay)
                time.sleep(delay)
            except openai.APIStatusError as err:  # 4xx: the request itself is wrong, retrying won't help
                raise UserError(
                    f"{self.role} server {self.url} rejected {what}: {_describe(err)}", self.fix
                ) from None
        raise AssertionError("unreachable")

    @property
    def fix(self) -> str:
        return f"check that {self.url} serves model '{self.model}' (rollout/teacher .url and .served_model)"


def _api_key(env_name: str | None, role: str) -> str:
    if env_name is None:
        return "EMPTY"  # the openai client insists on a key; servers without auth ignore it
    key = os.environ.get(env_name)
    if not key:
        raise UserError(
            f"{role} server API key variable {env_name} is not set",
            f"export {env_name}=<key>, or unset api_key_env",
        )
    return key


def _describe(err: Exception) -> str:
    """A short, key-free description of an openai error."""
    if isinstance(err, openai.APIStatusError):
        try:
            detail = err.response.json()
            detail = detail.get("error", detail) if isinstance(detail, dict) else detail
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except ValueError:
            detail = err.response.text[:200]
        return f"HTTP {err.status_code}: {detail}"
    if isinstance(err, openai.APITimeoutError):
        return "timed out"
    return "connection refused or reset" if isinstance(err, openai.APIConnectionError) else type(err).__name__


def check_tokenizer(client: ServerClient, tokenizer) -> None:
    """The server must give the student's ids: a probe text is tokenized on both sides, and the
    special tokens' ids are decoded on the server (vLLM's /tokenize and /detokenize)."""
    mine = tokenizer.encode(PROBE_TEXT, add_special_tokens=False)
    body = {"model": client.model, "prompt": PROBE_TEXT, "add_special_tokens": False}
    theirs = client.post("/tokenize", body).get("tokens")
    fix = f"serve a model with the student's tokenizer at {client.url}"
    if theirs != mine:
        where = next((i for i, (a, b) in enumerate(zip(mine, theirs or [], strict=False)) if a != b), None)
        shown = (
            f"first difference at {where}" if where is not None else f"{len(theirs or [])} vs {len(mine)} ids"
        )
        raise UserError(f"{client.role} server tokenizes differently from the student ({shown})", fix)
    specials = sorted({tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer) - 1} - {None})
    for token in specials:
        text = client.post("/detokenize", {"model": client.model, "tokens": [token]}).get("prompt")
        if text != tokenizer.decode([token]):
            raise UserError(
                f"{client.role} server decodes token {token} as {text!r}, the student as "
                f"{tokenizer.decode([token])!r}",
                fix,
            )
