"""`publish`: a saved dataset's repository tree, uploaded to the Hugging Face Hub or written locally.

The tree holds what a Hub user needs and nothing else:

    README.md, assets/*.png       the card, rendered again so that it names the repository
    data/<split>-*.parquet        the rows; the card's `configs:` points `load_dataset` at them
    worlds/*.json, generation.json

The `save_to_disk` arrow folders stay behind: they hold the same rows as the parquet shards.
`--dry-run OUT` writes exactly the tree an upload would send, so `datasets.load_dataset(OUT)`
shows what `load_dataset(repo_id)` will return.
"""

import importlib
import json
import logging
import re
import shutil
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import ValidationError

from longblocks.card import CARD_COLUMNS, SPLIT_ORDER, write_card
from longblocks.config import BuildConfig
from longblocks.errors import UserError

log = logging.getLogger(__name__)

TREE = (
    "data/*.parquet",
    "worlds/*.json",
    "generation.json",
    "audit.json",
)  # copied as they are; the card is rendered
REPO_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
SHARD = re.compile(r"(?P<split>.+)-\d{5}-of-\d{5}")
# Remote files an upload replaces: a republished dataset with fewer shards must not keep old ones.
STALE = ["data/*.parquet", "worlds/*.json", "assets/*.png"]
CONNECT_TIMEOUT_S = 20.0
NO_TOKEN_FIX = "run `huggingface-cli login` (or `hf auth login`), or set HF_TOKEN"


@dataclass(frozen=True)
class Published:
    repo_id: str
    files: tuple[str, ...]  # paths in the repository, sorted
    n_bytes: int
    location: str  # the dry-run folder, or the repository URL


def publish(dataset_dir: Path, repo_id: str, private: bool = False, dry_run: Path | None = None) -> Published:
    """Upload the repository tree of `dataset_dir` to the dataset repo `repo_id`.

    With `dry_run`, write that tree to the new folder `dry_run` instead (atomically) and touch no
    network. `private` applies when the repository is created; an existing one keeps its visibility.
    """
    check_dataset(dataset_dir)
    check_repo_id(repo_id)
    if dry_run is not None:
        return _write_tree(dataset_dir, dry_run, repo_id)
    from huggingface_hub import HfApi

    api = HfApi(token=_token())
    with _hub_errors(repo_id):  # before staging: an unreachable Hub should fail fast
        url = str(api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
    with tempfile.TemporaryDirectory(prefix="longblocks-publish-") as tmp:
        tree = Path(tmp) / "repo"
        files = stage(dataset_dir, tree, repo_id)
        n_bytes = _size(tree, files)
        with _hub_errors(repo_id):
            api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=str(tree),
                commit_message="Upload longblocks dataset",
                delete_patterns=STALE,
            )
    log.info("uploaded %d files (%d bytes) to %s", len(files), n_bytes, url)
    return Published(repo_id, files, n_bytes, url)


def check_dataset(dataset_dir: Path) -> None:
    if not (dataset_dir / "generation.json").is_file() or not any(dataset_dir.glob("data/*.parquet")):
        raise UserError(
            f"{dataset_dir} is not a longblocks dataset (no generation.json or data/*.parquet)",
            "pass the --out folder of `longblocks generate`",
        )


def check_repo_id(repo_id: str) -> None:
    bad = REPO_ID.fullmatch(repo_id) is None or "--" in repo_id or ".." in repo_id or len(repo_id) > 96
    if bad:
        raise UserError(
            f"--repo-id '{repo_id}' is not a Hub repository id",
            "use ORG/NAME: letters, digits, '-', '_' and '.', e.g. my-org/longblocks-32k",
        )


def stage(dataset_dir: Path, folder: Path, repo_id: str) -> tuple[str, ...]:
    """Build the repository tree in the new folder `folder`; returns its files, sorted."""
    folder.mkdir(parents=True)
    for pattern in TREE:
        for source in sorted(dataset_dir.glob(pattern)):
            if source.suffix == ".parquet" and pq.read_metadata(source).num_rows == 0:
                continue  # an empty split's shard: `load_dataset` fails on it, and it holds nothing
            target = folder / source.relative_to(dataset_dir)
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, target)
    cfg, summary = _read_generation(folder / "generation.json")
    write_card(folder, card_rows(folder / "data"), cfg, summary, repo_id=repo_id)
    return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))


def card_rows(data_dir: Path) -> dict[str, list[dict]]:
    """The card's columns of every row, by split (train, validation, test first), from the shards."""
    rows: dict[str, list[dict]] = {}
    for shard in sorted(data_dir.glob("*.parquet")):
        match = SHARD.fullmatch(shard.stem)
        split = match["split"] if match else shard.stem
        rows.setdefault(split, []).extend(pq.read_table(shard, columns=list(CARD_COLUMNS)).to_pylist())
    rank = {split: i for i, split in enumerate(SPLIT_ORDER)}
    return dict(sorted(rows.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def _read_generation(path: Path) -> tuple[BuildConfig, dict]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return BuildConfig(**meta["config"]), meta["summary"]
    except (ValueError, KeyError, TypeError, ValidationError):
        raise UserError(
            f"{path.name} of the dataset does not hold a config this version reads",
            "regenerate the dataset with `longblocks generate`",
        ) from None


def _write_tree(dataset_dir: Path, out: Path, repo_id: str) -> Published:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--dry-run {out} exists and is not empty", "choose a new folder for --dry-run")
    out = out.resolve()
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = stage(dataset_dir, tmp, repo_id)
        if out.exists():
            out.rmdir()  # an empty folder the user made for us
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Published(repo_id, files, _size(out, files), str(out))


def _size(folder: Path, files: tuple[str, ...]) -> int:
    return sum((folder / name).stat().st_size for name in files)


def _token() -> str:
    import huggingface_hub

    token = huggingface_hub.get_token()  # HF_TOKEN, then the token `huggingface-cli login` saved
    if not token:
        raise UserError("no Hugging Face token found", NO_TOKEN_FIX)
    return token


@contextmanager
def _hub_errors(repo_id: str):
    """Hub and network failures become one-line `UserError`s; a dead network fails within seconds."""
    from huggingface_hub.utils import HfHubHTTPError, HFValidationError

    try:
        with _connect_timeout(CONNECT_TIMEOUT_S):
            yield
    except HFValidationError as error:
        raise UserError(f"--repo-id '{repo_id}' is not valid: {_first_line(error)}", "use ORG/NAME") from None
    except HfHubHTTPError as error:  # before the network errors: it is an OSError too
        raise _refused(error, repo_id) from None
    except _network_errors() as error:
        raise UserError(
            f"cannot reach the Hugging Face Hub ({_first_line(error)})",
            "check the network, or write the repository locally with --dry-run OUT",
        ) from None


def _refused(error: Exception, repo_id: str) -> UserError:
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return UserError("the Hugging Face Hub rejected the token (HTTP 401)", NO_TOKEN_FIX)
    if status == 403:
        return UserError(
            f"the token may not write to {repo_id} (HTTP 403)",
            "use a token with write access to that namespace",
        )
    return UserError(
        f"the Hugging Face Hub refused the upload to {repo_id} ({_first_line(error)})",
        "check the repository on huggingface.co and try again",
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError covers `requests` (hub < 1.0); httpx's errors are not OSErrors (hub >= 1.0)."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx", "httpx2"):
        with suppress(ImportError, AttributeError):
            errors.append(importlib.import_module(name).HTTPError)
    return tuple(errors)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@contextmanager
def _connect_timeout(seconds: float):
    """huggingface_hub >= 1.0 waits forever to connect by default; a dead network should fail fast.

    Older hubs (requests) have no client factory: there this is a no-op.
    """
    import huggingface_hub
    from huggingface_hub.utils import _http

    factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    set_factory = getattr(huggingface_hub, "set_client_factory", None)
    if factory is None or set_factory is None:
        yield
        return

    def with_timeout():
        client = factory()
        client.timeout = type(client.timeout)(client.timeout.read, connect=seconds)
        return client

    set_factory(with_timeout)
    try:
        yield
    finally:
        set_factory(factory)
