"""`longblocks` command line: parse flags, build the config, call one library function.

A `UserError` from anywhere becomes one line on stderr and exit status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from longblocks.errors import UserError
from longblocks.version import generator_version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longblocks", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"longblocks {generator_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate a verifiable long-context dataset")
    gen.add_argument("--task", default="multihop", help="task family: multihop, grounding, longform or all")
    gen.add_argument(
        "--mix", default=None, help="task shares for --task all, e.g. multihop=0.4,grounding=0.4,longform=0.2"
    )
    gen.add_argument("--length", default="4k", help="prompt tokens, e.g. 32k or 4k,32k (256..128k, k=1024)")
    gen.add_argument("--num-examples", type=int, default=100, help="total examples over all splits")
    gen.add_argument("--hops", default="2,3,4", help="hop counts to mix, e.g. 3 or 2,3,4 or 2..6 (1..6)")
    gen.add_argument(
        "--compositional-share",
        type=float,
        default=0.3,
        help="share of multihop questions that count or compare (0..1, default 0.3)",
    )
    gen.add_argument("--depth", default="uniform", help="'uniform' or evidence depths, e.g. 0.1,0.5,0.9")
    gen.add_argument("--language", default="en", help="world languages, e.g. en or en,pt,de")
    gen.add_argument("--tokenizer", default=None, help="local HF tokenizer dir (default: embedded Qwen3)")
    gen.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    gen.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    gen.add_argument("--examples-per-world", type=int, default=8, help="examples drawn per world")
    gen.add_argument(
        "--shard", default=None, metavar="K/N", help="build only shard K of N (1..N); join all N with `merge`"
    )
    gen.add_argument("--out", required=True, type=Path, help="output directory")
    gen.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    join = commands.add_parser("merge", help="join the N shard folders of `generate --shard K/N`")
    join.add_argument("shards", nargs="+", type=Path, metavar="SHARD_DIR", help="the --out of every shard")
    join.add_argument("--out", required=True, type=Path, help="output directory")
    join.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    schemas = commands.add_parser("schemas", help="export the JSON Schemas of rows, worlds and configs")
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="folder to write into")
    check = commands.add_parser("validate", help="re-check a generated dataset; exit 1 if any check fails")
    check.add_argument("dir", type=Path, help="dataset folder (the --out of generate)")
    check.add_argument("--tokenizer", default=None, help="local HF tokenizer dir to count with instead")
    check.add_argument(
        "--margin",
        type=float,
        default=0.10,
        help="how far a shortcut baseline may beat chance (default 0.10; on few rows, 3 standard errors)",
    )
    aud = commands.add_parser("audit", help="shortcut baselines and text checks; exit 1 if one fails")
    aud.add_argument("dir", type=Path, help="dataset folder (the --out of generate)")
    aud.add_argument(
        "--margin",
        type=float,
        default=0.10,
        help="how far a baseline may beat chance (default 0.10; on few rows, 3 standard errors)",
    )
    aud.add_argument("--json", type=Path, default=None, help="also write the records to this JSON file")
    pub = commands.add_parser("publish", help="upload a generated dataset to the Hugging Face Hub")
    pub.add_argument("dir", type=Path, help="dataset folder (the --out of generate)")
    pub.add_argument("--repo-id", required=True, help="Hub dataset repository, ORG/NAME")
    pub.add_argument("--private", action="store_true", help="create the repository as private")
    pub.add_argument("--dry-run", type=Path, metavar="OUT", help="write the repo tree to OUT; upload nothing")
    return parser


def _int_list(text: str, flag: str) -> list[int]:
    text = text.strip()
    try:
        if ".." in text:
            low, high = text.split("..")
            return list(range(int(low), int(high) + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(
            f"{flag} '{text}' is not a list of integers", f"use e.g. {flag} 2,3,4 or 2..6"
        ) from None


def _depths(text: str) -> str | list[float]:
    if text == "uniform":
        return text
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(
            f"--depth '{text}' is not 'uniform' or a list of numbers", "use e.g. --depth 0.1,0.5,0.9"
        ) from None


def _mix(text: str) -> dict[str, float]:
    try:
        pairs = [item.split("=") for item in text.split(",")]
        return {name.strip(): float(share) for name, share in pairs}
    except ValueError:
        raise UserError(
            f"--mix '{text}' is not a list of task=share", "use e.g. --mix multihop=0.5,grounding=0.5"
        ) from None


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard '{text}' is not K/N", "use e.g. --shard 1/4 (shards 1/4..4/4)") from None
    return k, n


def generate(args: argparse.Namespace) -> None:
    from longblocks import build, io
    from longblocks.config import make_config
    from longblocks.render.sizing import load_counter, parse_lengths

    extra = {"mix": _mix(args.mix)} if args.mix else {}
    cfg = make_config(
        task=args.task,
        **extra,
        lengths=parse_lengths(args.length),
        num_examples=args.num_examples,
        hops=_int_list(args.hops, "--hops"),
        compositional_share=args.compositional_share,
        depth=_depths(args.depth),
        languages=[x.strip() for x in args.language.split(",")],
        tokenizer=args.tokenizer,
        seed=args.seed,
        workers=args.workers,
        shard=_shard(args.shard),
        examples_per_world=args.examples_per_world,
    )
    io.check_output(args.out, args.overwrite)
    load_counter(cfg.tokenizer)  # a bad tokenizer path fails before any work starts
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        total = sum(len(job.lengths) for job in build.jobs_to_build(cfg))
        bar = progress.add_task("generating", total=total)
        rows, worlds = build.build(cfg, on_world=lambda job: progress.advance(bar, len(job.lengths)))
    if cfg.shard is not None:
        from longblocks.shards import save_shard

        save_shard(rows, worlds, cfg, args.out, args.overwrite)
        k, n = cfg.shard
        print(
            f"wrote {args.out}: shard {k}/{n}, {len(worlds)} worlds, {total} examples; "
            f"join all {n} with `longblocks merge SHARD_DIR... --out DIR`"
        )
        return
    _print_summary(args.out, io.save(rows, worlds, cfg, args.out, args.overwrite))


def merge(args: argparse.Namespace) -> None:
    from longblocks.shards import merge as merge_shards

    _print_summary(args.out, merge_shards(args.shards, args.out, args.overwrite))


def _print_summary(out: Path, summary: dict) -> None:
    counts = ", ".join(f"{split} {n}" for split, n in summary["examples"].items())
    print(
        f"wrote {out}: {sum(summary['examples'].values())} examples ({counts}); "
        f"{summary['tokens']:,} prompt tokens; length min/median/max "
        f"{summary['n_tokens_min']}/{summary['n_tokens_median']:g}/{summary['n_tokens_max']}"
    )
    _warn_of_shortcuts(out)


def _warn_of_shortcuts(out: Path) -> None:
    """One stderr line when the saved audit finds a rule that answers without reading: the data
    is written (it is valid), but a policy trained on it can earn reward by that rule."""
    from longblocks.audit import AUDIT_FILE

    file = Path(out) / AUDIT_FILE
    failed = (
        [r for r in json.loads(file.read_text(encoding="utf-8")) if not r["passed"]] if file.is_file() else []
    )
    if failed:
        worst = ", ".join(f"{r['task']} {r['name']} {r['value']:.2f} > {r['limit']:.2f}" for r in failed[:3])
        print(
            f"warning: the audit found {len(failed)} shortcut(s) a model can score by without reading "
            f"({worst}{', ...' if len(failed) > 3 else ''}); see `longblocks audit {out}`",
            file=sys.stderr,
        )


def export_schemas(args: argparse.Namespace) -> None:
    from longblocks.schemas import export

    for path in export(args.out):
        print(f"wrote {path}")


def validate(args: argparse.Namespace) -> int:
    from longblocks.validate import validate_dataset

    report = validate_dataset(args.dir, tokenizer=args.tokenizer, margin=args.margin)
    print(report.render())
    return 0 if report.ok else 1  # failures are data problems, not usage errors (2)


def audit(args: argparse.Namespace) -> int:
    import json

    from longblocks.audit import audit as audit_dataset
    from longblocks.audit import render_table

    results = audit_dataset(args.dir, margin=args.margin)
    print(render_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=1) + "\n", encoding="utf-8")
    return 0 if all(r.passed for r in results) else 1


def publish(args: argparse.Namespace) -> None:
    from longblocks.publish import publish as publish_dataset

    done = publish_dataset(args.dir, args.repo_id, private=args.private, dry_run=args.dry_run)
    what = f"{len(done.files)} files, {done.n_bytes / 1e6:.1f} MB"
    if args.dry_run is not None:
        print(f"wrote {done.location}: {what}, the tree `publish` would upload to {done.repo_id}")
    else:
        print(f"uploaded {what} to {done.location}")


COMMANDS = {
    "generate": generate,
    "merge": merge,
    "schemas": export_schemas,
    "validate": validate,
    "audit": audit,
    "publish": publish,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
    except UserError as error:
        print(f"longblocks: error: {error}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
