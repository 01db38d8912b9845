import importlib
from pathlib import Path
from types import SimpleNamespace

import datasets
import huggingface_hub
import pytest
from huggingface_hub.utils import HfHubHTTPError

from longblocks import io, publish
from longblocks.build import build
from longblocks.cli import main
from longblocks.config import BuildConfig
from longblocks.errors import UserError

CONFIG = BuildConfig(lengths=[1024], num_examples=6, examples_per_world=2)
REPO = "longblocks-test/tiny"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("publish") / "ds"
    io.save(*build(CONFIG), CONFIG, out, overwrite=False)
    return out


# Uploads themselves run against a stand-in of the Hub's HTTP API: test_publish_hub.py.


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    """No test reaches the network: the Hub calls fail unless a test replaces them."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the Hugging Face Hub")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    monkeypatch.delenv("HF_TOKEN", raising=False)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _without_loading(card: str) -> list[str]:
    return [line for line in card.splitlines() if not ("load_dataset(" in line or "load_from_disk(" in line)]


def _one_line(error: UserError) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 300
    return text


def test_dry_run_writes_exactly_the_repository_tree(saved, tmp_path):
    out = tmp_path / "repo"
    done = publish.publish(saved, REPO, dry_run=out)
    files = _files(out)
    assert set(done.files) == files and done.location == str(out.resolve())
    assert done.n_bytes == sum((out / name).stat().st_size for name in files)
    shards = {str(p.relative_to(saved)) for p in saved.glob("data/*.parquet")}
    worlds = {str(p.relative_to(saved)) for p in saved.glob("worlds/*.json")}
    assert (
        files
        == {
            "README.md",
            "assets/length_hist.png",
            "assets/depth_hist.png",
            "assets/audit.png",
            "audit.json",
            "generation.json",
        }
        | shards
        | worlds
    )
    assert not (out / "dataset_dict.json").exists() and not (out / "train").exists()
    for name in files - {"README.md"}:  # copied as saved; the plots come from the same rows
        assert (out / name).read_bytes() == (saved / name).read_bytes(), name
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert f'load_dataset("{REPO}")' in readme and readme.startswith("---\nlicense: cc-by-4.0\n")
    saved_readme = (saved / "README.md").read_text(encoding="utf-8")
    assert _without_loading(readme) == _without_loading(saved_readme)  # only the repo id differs
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folder left


def test_load_dataset_of_the_dry_run_gives_the_saved_rows(saved, tmp_path):
    out = tmp_path / "repo"
    publish.publish(saved, REPO, dry_run=out)
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    on_disk = datasets.load_from_disk(str(saved))
    assert list(loaded) == list(on_disk) == ["train", "validation", "test"]
    for split in on_disk:
        assert loaded[split].features == on_disk[split].features
        assert loaded[split]["id"] == on_disk[split]["id"]
        for column in ("document", "answer", "n_tokens", "verification"):
            assert loaded[split][column] == on_disk[split][column], (split, column)


def test_an_empty_split_is_left_out_of_the_repository(tmp_path):
    cfg = BuildConfig(lengths=[1024], num_examples=2, examples_per_world=2)
    rows, worlds = build(cfg)
    empty = [split for split, split_rows in rows.items() if not split_rows]
    assert empty  # one world: validation and test hold nothing
    io.save(rows, worlds, cfg, tmp_path / "ds", overwrite=False)
    publish.publish(tmp_path / "ds", REPO, dry_run=tmp_path / "repo")
    assert not any((tmp_path / "repo" / "data").glob(f"{empty[0]}-*"))
    loaded = datasets.load_dataset(str(tmp_path / "repo"), cache_dir=str(tmp_path / "cache"))
    assert {split: len(loaded[split]) for split in loaded} == {s: len(r) for s, r in rows.items() if r}


def test_dry_run_into_a_non_empty_folder_is_refused(saved, tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    publish.publish(saved, REPO, dry_run=out)  # an empty folder is fine
    with pytest.raises(UserError, match="exists and is not empty") as error:
        publish.publish(saved, REPO, dry_run=out)
    _one_line(error.value)


def test_failed_dry_run_leaves_nothing_behind(saved, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(publish, "write_card", explode)
    with pytest.raises(OSError, match="disk full"):
        publish.publish(saved, REPO, dry_run=tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_dataset_is_refused(tmp_path):
    with pytest.raises(UserError, match="is not a longblocks dataset") as error:
        publish.publish(tmp_path, REPO, dry_run=tmp_path / "repo")
    _one_line(error.value)


@pytest.mark.parametrize(
    "repo_id", ["tiny", "a/b/c", "org/na me", "-org/x", "org/x-", "org--a/x", "org/x..y", ""]
)
def test_bad_repo_id_is_refused(saved, tmp_path, repo_id):
    with pytest.raises(UserError, match="is not a Hub repository id") as error:
        publish.publish(saved, repo_id, dry_run=tmp_path / "repo")
    assert "ORG/NAME" in _one_line(error.value)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("repo_id", ["org/name", "My-Org/longblocks_32k.v1", "a/b"])
def test_good_repo_ids_pass(repo_id):
    publish.check_repo_id(repo_id)


def test_publish_without_a_token_is_one_line(saved, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UserError, match="no Hugging Face token found") as error:
        publish.publish(saved, REPO)
    assert "HF_TOKEN" in _one_line(error.value) and "login" in str(error.value)


def _connection_errors() -> list[Exception]:
    errors: list[Exception] = [ConnectionError("[Errno -3] Temporary failure in name resolution")]
    for name in ("requests", "httpx", "httpx2"):  # whichever HTTP library this hub version uses
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors.append(
            module.ConnectError("connect failed") if name != "requests" else module.ConnectionError()
        )
    return errors


@pytest.mark.parametrize("failure", _connection_errors(), ids=lambda e: type(e).__module__)
def test_unreachable_hub_is_one_line(saved, monkeypatch, failure):
    def unreachable(*args, **kwargs):
        raise failure

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub") as error:
        publish.publish(saved, REPO)
    assert "--dry-run" in _one_line(error.value)


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "rejected the token"), (403, "may not write to"), (500, "refused the upload")],
)
def test_hub_refusal_is_one_line(saved, monkeypatch, status, message):
    def refused(*args, **kwargs):
        response = SimpleNamespace(status_code=status, headers={}, request=None)
        raise HfHubHTTPError(f"{status} Client Error\n\nRequest ID: abc", response=response)

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refused)
    with pytest.raises(UserError, match=message) as error:
        publish.publish(saved, REPO)
    _one_line(error.value)


def _cli(capsys, *argv):
    code = main(["publish", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_dry_run_exits_0_and_reports_the_tree(saved, tmp_path, capsys):
    code, stdout, _ = _cli(capsys, str(saved), "--repo-id", REPO, "--dry-run", str(tmp_path / "repo"))
    assert code == 0
    assert (
        stdout.startswith("wrote ") and f"{len(_files(tmp_path / 'repo'))} files" in stdout and REPO in stdout
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-token", "no Hugging Face token found"),
        ("unreachable", "cannot reach the Hugging Face Hub"),
        ("bad-repo-id", "is not a Hub repository id"),
        ("not-a-dataset", "is not a longblocks dataset"),
    ],
)
def test_cli_errors_exit_2_with_one_line(saved, tmp_path, capsys, monkeypatch, case, message):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None if case == "no-token" else "hf_fake_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    folder = tmp_path if case == "not-a-dataset" else saved
    repo_id = "not a repo" if case == "bad-repo-id" else REPO
    code, stdout, stderr = _cli(capsys, str(folder), "--repo-id", repo_id)
    assert code == 2 and stdout == ""
    assert stderr.startswith("longblocks: error: ") and stderr.count("\n") == 1 and message in stderr


def test_hub_client_gets_a_connect_timeout_only_while_publishing():
    if not hasattr(huggingface_hub, "set_client_factory"):
        pytest.skip("this huggingface_hub has no client factory (requests-based)")
    from huggingface_hub.utils import get_session

    with publish._connect_timeout(3.0):
        assert get_session().timeout.connect == 3.0
    assert get_session().timeout.connect != 3.0


def test_failed_upload_after_create_is_one_line(saved, monkeypatch):
    def upload_folder(self, **kwargs):
        raise ConnectionError("Connection reset by peer")

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub") as error:
        publish.publish(saved, REPO)
    _one_line(error.value)
