"""`serve(...)`: load a model and answer requests until SIGINT/SIGTERM (the `dgrpo serve` command)."""

import json
import logging
import os
import signal
import threading

import torch

from dgrpo.errors import UserError
from dgrpo.models import load_model, load_tokenizer
from dgrpo.server.engine import Engine
from dgrpo.server.http import make_server
from dgrpo.weight_transfer import Receiver

log = logging.getLogger(__name__)


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_model_name: str | None = None,
    seed: int = 0,
    dtype: str = "float32",
    api_key_env: str | None = None,
    weight_transfer_config: str | None = '{"backend": "gloo"}',
    threads: int | None = None,
    on_ready=print,
) -> None:
    """Serve `model` (a dgrpo model source: HF directory, run directory or tiny name; tiny models
    are initialised from `seed`, like the trainer's) on host:port until a signal stops it.
    `on_ready` receives one line naming the base URL (port 0 picks a free port)."""
    backend = _transfer_backend(weight_transfer_config)
    api_key = _api_key(api_key_env)
    if threads:
        torch.set_num_threads(threads)
    engine = Engine(
        load_model(model, seed=seed, dtype=dtype), load_tokenizer(model), served_model_name or model
    )
    try:
        server = make_server(engine, host, port, api_key, Receiver(engine, backend))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror}", "choose another --port") from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    on_ready(f"serving {engine.name} on http://{bound_host}:{bound_port}/v1 (weight transfer: {backend})")
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        log.info("server stopped")


def _transfer_backend(text: str | None) -> str | None:
    if not text:
        return None
    try:
        backend = json.loads(text).get("backend")
    except (ValueError, AttributeError):
        raise UserError(
            f"--weight-transfer-config {text!r} is not a JSON object", 'write e.g. \'{"backend": "gloo"}\''
        ) from None
    if backend not in ("gloo", "disk"):
        raise UserError(f"weight-transfer backend {backend!r} is not served here", "use gloo or disk")
    return backend


def _api_key(env_name: str | None) -> str | None:
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise UserError(f"--api-key-env {env_name} is not set in the environment", f"export {env_name}=<key>")
    return key
