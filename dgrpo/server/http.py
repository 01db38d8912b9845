"""HTTP routes of `dgrpo serve`, laid out like vLLM's server (stdlib `http.server`, JSON in/out).

    GET  /health, /v1/models
    POST /v1/completions                     token-id prompts; logprobs, prompt_logprobs, n, seed, ...
    POST /tokenize, /detokenize              vLLM's tokenizer routes (the trainer's tokenizer probe)
    POST /init_weight_transfer_engine        vLLM's weight-transfer API (dgrpo.weight_transfer)
    POST /start_weight_update, /update_weights, /finish_weight_update
    POST /update_weights_from_disk           {model_path}: the save-and-reload fallback

Errors come back in OpenAI's shape, {"error": {"message", "type", "code"}}. With an API key,
every route but /health needs `Authorization: Bearer <key>`.
"""

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dgrpo.server.engine import Engine, ModelNotFound, RequestError
from dgrpo.weight_transfer import Receiver

log = logging.getLogger(__name__)


def make_server(
    engine: Engine, host: str, port: int, api_key: str | None, receiver: Receiver
) -> ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server; port 0 picks a free one (server.server_address)."""
    routes: dict[tuple[str, str], Callable[[dict], dict]] = {
        ("GET", "/health"): lambda body: {"status": "ok"},
        ("GET", "/v1/models"): lambda body: engine.models(),
        ("POST", "/v1/completions"): engine.completions,
        ("POST", "/tokenize"): engine.tokenize,
        ("POST", "/detokenize"): engine.detokenize,
        ("POST", "/init_weight_transfer_engine"): receiver.init,
        ("POST", "/start_weight_update"): receiver.start,
        ("POST", "/update_weights"): receiver.update,
        ("POST", "/finish_weight_update"): receiver.finish,
        ("POST", "/update_weights_from_disk"): receiver.from_disk,
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses connections

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._handle("GET")

        def do_POST(self):  # noqa: N802
            self._handle("POST")

        def _handle(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            route = routes.get((method, path))
            try:
                body = self._body()
                if route is None:
                    raise _HTTPError(HTTPStatus.NOT_FOUND, f"no route {method} {path}")
                if api_key and path != "/health" and not self._authorised():
                    raise _HTTPError(HTTPStatus.UNAUTHORIZED, "missing or wrong API key")
                self._send(HTTPStatus.OK, route(body))
            except _HTTPError as err:
                self._error(err.status, str(err))
            except ModelNotFound as err:
                self._error(HTTPStatus.NOT_FOUND, str(err))
            except (RequestError, ValueError, TypeError, KeyError) as err:
                self._error(HTTPStatus.BAD_REQUEST, f"{type(err).__name__}: {err}")
            except Exception as err:  # a failed computation: report it, keep serving
                log.exception("request %s %s failed", method, path)
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as err:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, f"invalid JSON: {err}") from None
            if not isinstance(body, dict):
                raise _HTTPError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
            return body

        def _authorised(self) -> bool:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            return hmac.compare_digest(given.encode(), api_key.encode())

        def _error(self, status: HTTPStatus, message: str) -> None:
            kind = "NotFoundError" if status == HTTPStatus.NOT_FOUND else status.phrase.replace(" ", "")
            self._send(status, {"error": {"message": message, "type": kind, "code": status.value}})

        def _send(self, status: HTTPStatus, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # requests at debug level, not on stderr
            log.debug("%s " + format, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class ServerThread:
    """A server running in a background thread of this process (tests, benchmarks):
    `with ServerThread(...) as url:` yields the base URL and always shuts it down."""

    def __init__(self, engine: Engine, api_key: str | None = None, transfer_backend: str | None = "gloo"):
        self.server = make_server(engine, "127.0.0.1", 0, api_key, Receiver(engine, transfer_backend))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
