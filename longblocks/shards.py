"""Generation past one machine: `generate --shard K/N` writes one shard, `merge` joins all N.

A shard is a fixed subset of the planned worlds (`build.shard_jobs`), so shards can run
anywhere, in any order, under any scheduler. Layout of a shard directory:

    shard.json          format, generator version (package + code hash), K/N, the recorded
                        config, its world ids, the sha256 of every other file
    rows.jsonl          its rows in plan order, one JSON object a line
    worlds/<id>.json    its worlds (the same writer as a dataset's)

`merge` checks that the shards are all N of one config and one generator and untouched, puts
worlds and rows back in plan order and writes them with `io.save`: the result is the dataset
one unsharded `generate` would have written, byte for byte.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from longblocks import io
from longblocks.build import SPLITS, WorldJob, plan_worlds, shard_jobs
from longblocks.config import BuildConfig, make_config
from longblocks.errors import UserError
from longblocks.version import generator_version
from longblocks.world.schema import World

FORMAT = "longblocks-shard"
MANIFEST, ROWS = "shard.json", "rows.jsonl"


@dataclass(frozen=True)
class Shard:
    """A shard directory's manifest, read and checked against the plan of its config."""

    folder: Path
    k: int
    n: int
    version: str
    config: dict
    world_ids: list[str]
    sha256: dict[str, str]  # file name in the shard -> digest of its bytes


def save_shard(
    rows: dict[str, list[dict]], worlds: list[World], cfg: BuildConfig, out: Path, overwrite: bool
) -> None:
    """Write one shard (`cfg.shard`) atomically to `out`."""
    with io.staged(out, overwrite) as tmp:
        with (tmp / ROWS).open("w", encoding="utf-8") as f:
            for split in SPLITS:
                for row in rows[split]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        io.write_worlds(worlds, tmp / "worlds")
        files = [ROWS, *(f"worlds/{world.id}.json" for world in worlds)]
        manifest = {
            "format": FORMAT,
            "version": generator_version(),
            "shard": list(cfg.shard),
            "config": cfg.recorded(),
            "worlds": [world.id for world in worlds],
            # A shard travels between machines: merge refuses a truncated or altered copy.
            "sha256": {name: hashlib.sha256((tmp / name).read_bytes()).hexdigest() for name in files},
        }
        io.write_json(manifest, tmp / MANIFEST)


def merge(folders: list[Path], out: Path, overwrite: bool = False) -> dict:
    """Join the shard directories into the full dataset at `out`; returns its summary.

    Every check runs before anything is written; a bad set of shards is one `UserError`.
    """
    io.check_output(out, overwrite)
    shards = [read_manifest(folder) for folder in folders]
    cfg = check_complete(shards)
    jobs = plan_worlds(cfg)
    by_world: dict[str, tuple[World, list[dict]]] = {}
    for shard in shards:
        by_world.update(read_contents(shard, shard_jobs(jobs, (shard.k, shard.n))))
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    worlds: list[World] = []
    for job in jobs:  # plan order, as `build.build` collects them
        world, world_rows = by_world[job.world_id]
        rows[job.split].extend(world_rows)
        worlds.append(world)
    return io.save(rows, worlds, cfg, out, overwrite)


def read_manifest(folder: Path) -> Shard:
    path = folder / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if meta["format"] != FORMAT:
            raise ValueError
        k, n = meta["shard"]
        if not (isinstance(k, int) and isinstance(n, int) and 1 <= k <= n):
            raise ValueError
        return Shard(folder, k, n, meta["version"], meta["config"], meta["worlds"], meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{folder} is not a longblocks shard (no readable {MANIFEST})",
            "pass the --out folders of `longblocks generate --shard K/N`",
        ) from None


def check_complete(shards: list[Shard]) -> BuildConfig:
    """The shards' common config, if they are shards 1..N of it, each once, from one version."""
    first = shards[0]
    for shard in shards[1:]:
        if shard.version != first.version:
            raise UserError(
                f"{shard.folder} was made by longblocks {shard.version}, {first.folder} by {first.version}",
                "generate every shard with the same longblocks code (`longblocks --version`)",
            )
        differing = sorted(
            k for k in first.config.keys() | shard.config.keys() if shard.config.get(k) != first.config.get(k)
        )
        if differing:
            name = differing[0]
            raise UserError(
                f"{shard.folder} and {first.folder} come from different configs "
                f"({name}: {shard.config.get(name)!r} vs {first.config.get(name)!r})",
                "merge shards of one `generate` command that differ only in --shard and --workers",
            )
        if shard.n != first.n:
            raise UserError(
                f"{shard.folder} is shard {shard.k}/{shard.n} but {first.folder} is {first.k}/{first.n}",
                "merge shards of one --shard K/N series (the same N)",
            )
    seen: dict[int, Path] = {}
    for shard in shards:
        if shard.k in seen:
            raise UserError(
                f"shard {shard.k}/{shard.n} is given twice: {seen[shard.k]} and {shard.folder}",
                "pass each shard folder once",
            )
        seen[shard.k] = shard.folder
    missing = [k for k in range(1, first.n + 1) if k not in seen]
    if missing:
        names = ", ".join(f"{k}/{first.n}" for k in missing)
        raise UserError(f"missing shard {names}", "run `longblocks generate --shard` for it and merge all N")
    return make_config(**first.config)


def read_contents(shard: Shard, jobs: list[WorldJob]) -> dict[str, tuple[World, list[dict]]]:
    """world id -> (world, rows) of one shard, checked against its manifest and its plan."""
    expected = [job.world_id for job in jobs]
    if shard.world_ids != expected:
        raise UserError(
            f"{shard.folder} holds other worlds than shard {shard.k}/{shard.n} of its config plans",
            "regenerate this shard",
        )
    rows: dict[str, list[dict]] = {world_id: [] for world_id in expected}
    for line in _verified(shard, ROWS).splitlines():
        row = json.loads(line)
        rows[row["world_id"]].append(row)
    for job in jobs:
        if [row["id"] for row in rows[job.world_id]] != [job.row_id(j) for j in range(len(job.tasks))]:
            raise UserError(
                f"{shard.folder} is damaged: the rows of {job.world_id} are not the planned ones",
                "regenerate this shard",
            )
    return {
        world_id: (World.model_validate_json(_verified(shard, f"worlds/{world_id}.json")), rows[world_id])
        for world_id in expected
    }


def _verified(shard: Shard, name: str) -> bytes:
    """The bytes of one shard file, if they are the bytes its manifest recorded."""
    try:
        data = (shard.folder / name).read_bytes()
    except OSError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != shard.sha256.get(name):
        what = "is missing" if data is None else "differs from its manifest"
        raise UserError(f"{shard.folder} is damaged: {name} {what}", "copy or regenerate this shard")
    return data
