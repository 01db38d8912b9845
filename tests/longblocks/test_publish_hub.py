"""`longblocks publish` end to end against a stand-in of the Hub's HTTP API on loopback.

Each upload is a real `longblocks publish` process whose `huggingface_hub` talks HTTP to
`hub_standin.HubStandIn` through `HF_ENDPOINT`; the stand-in's repository must then hold exactly
the tree `--dry-run` writes for the same dataset.
"""

import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from longblocks import io
from longblocks.build import build
from longblocks.config import BuildConfig
from longblocks.publish import publish
from tests.longblocks.hub_standin import HubStandIn

REPO = "longblocks-test/tiny"
TOKEN = "hf_standin_token"
ROOT = Path(__file__).parents[2]


def _save(folder: Path, **config) -> Path:
    cfg = BuildConfig(lengths=[1024], **config)
    io.save(*build(cfg), cfg, folder, overwrite=False)
    return folder


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    """Three worlds: train, validation and test each hold rows."""
    return _save(tmp_path_factory.mktemp("first") / "ds", num_examples=6, examples_per_world=2, seed=5)


@pytest.fixture(scope="module")
def second(tmp_path_factory) -> Path:
    """Other rows from one world: only train has rows, so validation and test shards must go."""
    return _save(tmp_path_factory.mktemp("second") / "ds", num_examples=2, examples_per_world=2, seed=6)


@pytest.fixture
def hub():
    with HubStandIn(TOKEN) as standin:
        yield standin


def _env(hub: HubStandIn, tmp_path: Path, token: str = TOKEN) -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_TOKEN=token,
        HF_HOME=str(tmp_path / "hf-home"),  # no saved token or cache of the user's
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1",
        PYTHONPATH=str(ROOT),
    )
    return env


def _publish_command(dataset: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "longblocks.cli", "publish", str(dataset), "--repo-id", REPO, *flags]


def _publish(
    hub, dataset: Path, tmp_path: Path, *flags: str, token: str = TOKEN
) -> subprocess.CompletedProcess:
    command = _publish_command(dataset, *flags)
    return subprocess.run(
        command, env=_env(hub, tmp_path, token), capture_output=True, text=True, timeout=300
    )


def _dry_run_tree(dataset: Path, out: Path) -> dict[str, bytes]:
    publish(dataset, REPO, dry_run=out)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _load_remote(hub: HubStandIn, folder: Path) -> datasets.DatasetDict:
    """What `load_dataset(REPO)` would read: the remote files, loaded with a cache of their own."""
    for path, data in hub.repos[REPO].files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return datasets.load_dataset(str(folder), cache_dir=str(folder.parent / f"{folder.name}-cache"))


def test_publish_then_republish_other_rows(hub, first, second, tmp_path):
    done = _publish(hub, first, tmp_path, "--private")
    assert done.returncode == 0, done.stderr
    assert f"{hub.endpoint}/datasets/{REPO}" in done.stdout
    assert hub.repos[REPO].files == _dry_run_tree(first, tmp_path / "tree-first")
    assert hub.repos[REPO].private and len(hub.repos[REPO].commits) == 1

    again = _publish(hub, second, tmp_path)  # the repository exists: a second commit replaces rows
    assert again.returncode == 0, again.stderr
    remote = hub.repos[REPO].files
    assert remote == _dry_run_tree(second, tmp_path / "tree-second")  # no shard or world of the first
    assert not any(name.startswith(("data/validation-", "data/test-")) for name in remote)
    assert len(hub.repos[REPO].commits) == 2
    loaded = _load_remote(hub, tmp_path / "remote")
    assert list(loaded) == ["train"]
    assert loaded["train"]["id"] == datasets.load_from_disk(str(second))["train"]["id"]

    unchanged = _publish(hub, second, tmp_path)  # same files again: nothing to commit
    assert unchanged.returncode == 0, unchanged.stderr
    assert len(hub.repos[REPO].commits) == 2 and hub.repos[REPO].files == remote


def test_an_interrupted_upload_changes_nothing_and_a_repeat_completes_it(hub, first, second, tmp_path):
    assert _publish(hub, first, tmp_path).returncode == 0
    first_tree = dict(hub.repos[REPO].files)

    hub.interrupt_next_commit = True
    process = subprocess.Popen(
        _publish_command(second), env=_env(hub, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert hub.commit_half_read.wait(timeout=120), "the commit never started"
    finally:
        process.kill()  # the upload dies with half of its commit sent
        process.communicate(timeout=60)
        hub.resume_commit.set()
    assert process.returncode != 0
    assert hub.repos[REPO].files == first_tree and len(hub.repos[REPO].commits) == 1

    repeated = _publish(hub, second, tmp_path)
    assert repeated.returncode == 0, repeated.stderr
    assert hub.repos[REPO].files == _dry_run_tree(second, tmp_path / "tree-second")
    assert len(hub.repos[REPO].commits) == 2


def test_a_rejected_token_is_one_line_and_uploads_nothing(hub, first, tmp_path):
    done = _publish(hub, first, tmp_path, token="hf_wrong")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "longblocks: error: the Hugging Face Hub rejected the token (HTTP 401); "
        "run `huggingface-cli login` (or `hf auth login`), or set HF_TOKEN"
    ]
    assert hub.repos == {} and hub.requests == ["POST /api/repos/create"]
