"""Training against servers on 127.0.0.1: opd and dgrpo runs whose rollouts and teacher come
from `dgrpo serve` match the local runs' losses; a server killed mid-run stops training with one
error line (exit 2) and `--resume` continues against a new server; the API key never reaches
the run's files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dgrpo.metrics import METRICS
from dgrpo.models import build_tiny, embedded_tokenizer
from dgrpo.server.engine import Engine
from dgrpo.server.http import ServerThread
from dgrpo.trainer import train

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
ROOT = Path(__file__).parents[2]
# top_k = 1 makes sampling deterministic, so the two runs see the same completions
STEPS = {"run": {"steps": 3}, "optim": {"schedule": "constant"}}


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("method", "estimator"), [("opd", "topk"), ("dgrpo", "sampled")])
def test_run_against_servers_matches_the_local_run(make_run_config, method, estimator):
    rollout = {"top_k": 1, "group_size": 2, "max_new_tokens": 6}
    loss = {"estimator": estimator}
    local = metrics(
        train(make_run_config(method, "local", rollout=rollout, loss=loss, teacher={"top_k": 4}, **STEPS))
    )
    tokenizer = embedded_tokenizer()
    policy = Engine(build_tiny("tiny-qwen3", 7), tokenizer, "policy")  # replaced by the first push
    teacher = Engine(build_tiny("tiny-qwen3-teacher", 1), tokenizer, "teacher")  # the local run's teacher
    with ServerThread(policy) as policy_url, ServerThread(teacher) as teacher_url:
        cfg = make_run_config(
            method, "remote", loss=loss, **STEPS,
            rollout={**rollout, "backend": "server", "url": policy_url},
            teacher={"model": None, "url": teacher_url, "top_k": 4},
        )  # fmt: skip
        remote = metrics(train(cfg))
    assert [row["loss"] for row in remote] == pytest.approx(
        [row["loss"] for row in local], rel=1e-4, abs=1e-6
    )
    assert [row["kl_teacher"] for row in remote] == pytest.approx(
        [row["kl_teacher"] for row in local], abs=1e-4
    )
    assert all(row["rollout/logp_diff_max"] < 1e-4 for row in remote)  # same weights on both sides
    assert all(row["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-4) for row in remote)
    assert policy.version == 3 + 1  # the start and every optimizer step pushed the weights
    assert {name for name in remote[0] if name.startswith("rollout/")} <= set(METRICS)  # documented


def start_server(tmp_path, name: str, env: dict) -> tuple[subprocess.Popen, str]:
    """`dgrpo serve tiny-qwen3 --port 0` in a subprocess; returns it and its base URL."""
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "dgrpo.cli", "serve", "tiny-qwen3", "--port", "0",
         "--served-model-name", "policy", "--api-key-env", "DGRPO_TEST_KEY", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    line = process.stdout.readline()  # "serving policy on http://127.0.0.1:PORT/v1 (...)"
    assert line.startswith("serving policy on http://127.0.0.1:"), line
    return process, line.split()[3]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_killed_server_stops_the_run_with_one_error_and_resume_continues(make_run_values, tmp_path):
    secret = "sk-test-0123456789abcdef"
    env = {**os.environ, "DGRPO_TEST_KEY": secret, "PYTHONPATH": str(ROOT)}
    values = make_run_values("opd", teacher={"model": "tiny-qwen3-teacher"}, loss={"estimator": "full"},
                             run={"steps": 4, "save_every": 1, "threads": 1, "progress": False})  # fmt: skip
    config = tmp_path / "opd.yaml"
    run_dir = Path(values["run"]["out_dir"])
    server, url = start_server(tmp_path, "first", env)
    try:
        client = {"api_key_env": "DGRPO_TEST_KEY", "retries": 1, "backoff_s": 0.1}
        values["rollout"] |= {"backend": "server", "url": url, "server": client}
        config.write_text(yaml.safe_dump(values))
        command = [sys.executable, "-m", "dgrpo.cli", "train", str(config), "--quiet"]
        trainer = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        deadline = time.monotonic() + 300
        while not (run_dir / "metrics.jsonl").is_file() or len(metrics(run_dir)) < 2:
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.stderr.read()
            time.sleep(0.2)
        server.kill()  # mid-run, after step 2
        server.wait()
        _, err = trainer.communicate(timeout=120)
    finally:
        stop(server)
    assert trainer.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("dgrpo: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # warnings (the retry) may precede it
    assert (
        errors[0].startswith(f"dgrpo: error: rollout server {url} failed 2 times") and "--resume" in errors[0]
    )
    done = len(metrics(run_dir))
    assert 2 <= done < 4
    server, url = start_server(tmp_path, "second", env)
    try:
        values["rollout"]["url"] = url
        config.write_text(yaml.safe_dump(values))
        resumed = subprocess.run(
            [*command, "--resume"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
        )
    finally:
        stop(server)
    assert resumed.returncode == 0, resumed.stderr
    rows = metrics(run_dir)
    assert [row["step"] for row in rows][-1] == 4 and rows[-1]["rollout/sync_s"] >= 0
    for path in run_dir.rglob("*"):  # the key is in the environment only
        if path.is_file() and path.suffix in (".yaml", ".jsonl", ".json", ".log", ".txt"):
            assert secret not in path.read_text(errors="ignore"), path
    assert secret not in resumed.stderr + resumed.stdout + err


def test_sampled_server_run_resumes_on_the_same_curve(make_run_config):
    """Request seeds come from the trainer's RNG and the weights are pushed at start, so a run
    stopped after a checkpoint and resumed (the server kept its last weights, or not) samples
    what the uninterrupted run sampled."""
    tokenizer = embedded_tokenizer()
    with ServerThread(Engine(build_tiny("tiny-qwen3", 5), tokenizer, "policy")) as url:
        rollout = {"backend": "server", "url": url, "temperature": 1.0, "max_new_tokens": 6}

        def make(out: str, **run):
            run = {"steps": 3, "save_every": 1, **run}
            return make_run_config("dgrpo", out, rollout=rollout, loss={"estimator": "sampled"}, run=run)

        whole = metrics(train(make("whole")))
        train(make("parts", stop_after=2))
        parts = metrics(train(make("parts"), resume=True))
    assert [row["step"] for row in parts] == [1, 2, 3]
    assert [row["loss"] for row in parts] == pytest.approx([row["loss"] for row in whole], rel=1e-6)
    assert [row["reward/mean"] for row in parts] == [row["reward/mean"] for row in whole]
