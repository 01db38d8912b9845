"""`dgrpo` command line: parse flags, build the config, call one library function.

    dgrpo train CONFIG [--set section.key=value ...] [--resume]
    torchrun --nproc_per_node N -m dgrpo.cli train CONFIG ...   (multi-process, dgrpo.distributed)
    dgrpo eval CONFIG --checkpoint DIR [--split test] [--out DIR] [--set ...]
    dgrpo init METHOD [--out FILE]          a bundled config to edit (stdout by default)
    dgrpo save-model NAME OUT [--seed N]    an embedded tiny model + tokenizer as a HF folder
    dgrpo schema [--out FILE]
    dgrpo serve MODEL [--port N]   (an OpenAI-compatible completions server, dgrpo.server)

CONFIG is a YAML file or the name of a bundled config (sft, kd, grpo, opd, dgrpo).

A `UserError` from anywhere becomes one line on stderr and exit status 2; a run stopped by a
NaN/inf loss exits 1 with the same kind of line.
"""

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from dgrpo.errors import DivergedError, UserError

_CONFIG_HELP = "YAML file or bundled config name: sft, kd, grpo, opd, dgrpo (`dgrpo init` prints one)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgrpo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train with sft, kd, grpo, opd or dgrpo (loss.method)")
    train.add_argument("config", help=_CONFIG_HELP)
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in run.out_dir"
    )
    evaluate = commands.add_parser("eval", help="greedy evaluation: accuracy per task, length and depth")
    evaluate.add_argument("config", help=_CONFIG_HELP)
    evaluate.add_argument(
        "--checkpoint", required=True, help="checkpoint or run directory, or a tiny model name"
    )
    evaluate.add_argument("--split", default="test", help="dataset split to evaluate (default: test)")
    evaluate.add_argument("--out", type=Path, default=None, help="output folder (default: <checkpoint>/eval)")
    for sub in (train, evaluate):
        sub.add_argument(
            "--set",
            dest="overrides",
            nargs="+",
            action="extend",
            default=[],
            metavar="KEY=VALUE",
            help="override config values, e.g. --set loss.lam=0.5 run.steps=100",
        )
        sub.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    init = commands.add_parser("init", help="print a bundled method config, to edit and pass to train")
    init.add_argument("method", help="sft, kd, grpo, opd or dgrpo")
    init.add_argument("--out", type=Path, default=None, help="write to this new file instead of stdout")
    save = commands.add_parser("save-model", help="write an embedded tiny model + its tokenizer to a folder")
    save.add_argument("name", help="tiny-qwen3 or tiny-qwen3-teacher")
    save.add_argument("out", type=Path, help="new folder (loadable with transformers' from_pretrained)")
    save.add_argument("--seed", type=int, default=0, help="initialisation seed (run.seed does the same)")
    schema = commands.add_parser("schema", help="print the JSON Schema of the config")
    schema.add_argument("--out", type=Path, default=None, help="write to this file instead of stdout")
    _add_serve(commands)
    return parser


def _add_serve(commands) -> None:
    serve = commands.add_parser("serve", help="serve a model over the OpenAI-compatible completions API")
    serve.add_argument("model", help="HF model directory, dgrpo run directory or tiny model name")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--served-model-name", default=None, help="model name clients send (default: MODEL)")
    serve.add_argument("--seed", type=int, default=0, help="initialisation seed of a tiny model")
    serve.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    serve.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    serve.add_argument(
        "--weight-transfer-config",
        default='{"backend": "gloo"}',
        help="vLLM-style JSON: backend gloo or disk; '' turns weight transfer off",
    )
    serve.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def serve(args: argparse.Namespace) -> None:
    from dgrpo.server.run import serve as run_server

    options = {k: v for k, v in vars(args).items() if k not in ("command", "model")}
    run_server(args.model, **options, on_ready=lambda line: print(line, flush=True))


def train(args: argparse.Namespace) -> None:
    from dgrpo.checkpoint import latest
    from dgrpo.config import load_config
    from dgrpo.distributed import is_main
    from dgrpo.trainer import train as run_training

    if not is_main():  # under torchrun only rank 0 reports; the other ranks print errors only
        logging.getLogger("dgrpo").setLevel(logging.ERROR)
    cfg = load_config(args.config, args.overrides)
    run_dir = run_training(cfg, resume=args.resume)
    if is_main():
        print(f"{cfg.loss.method}: metrics in {run_dir}/metrics.jsonl; latest checkpoint {latest(run_dir)}")


def evaluate(args: argparse.Namespace) -> None:
    from dgrpo.config import load_config
    from dgrpo.evaluate import evaluate as run_eval

    cfg = load_config(args.config, args.overrides)
    report = run_eval(cfg, args.checkpoint, args.split, args.out)
    overall = report["overall"]
    print(
        f"{args.split}: accuracy {overall['accuracy']:.3f}, reward {overall['reward']:.3f} on {overall['n']} "
        f"examples ({report['skipped_long']} skipped as too long)"
    )
    for task, cell in report["by_task"].items():
        print(f"  {task}: accuracy {cell['accuracy']:.3f} (n={cell['n']})")


def init(args: argparse.Namespace) -> None:
    from dgrpo.config import bundled_configs

    bundled = bundled_configs()
    if args.method not in bundled:
        raise UserError(f"no bundled config '{args.method}'", f"choose one of {', '.join(bundled)}")
    text = bundled[args.method].read_text(encoding="utf-8")
    if args.out is None:
        sys.stdout.write(text)
        return
    if args.out.exists():
        raise UserError(f"{args.out} exists", "choose a new file name for --out")
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}; train with: dgrpo train {args.out}")


def save_model(args: argparse.Namespace) -> None:
    from dgrpo.models import save_embedded

    save_embedded(args.name, args.out, seed=args.seed)
    print(f"wrote {args.name} (seed {args.seed}) and its tokenizer to {args.out}")


def export_schema(args: argparse.Namespace) -> None:
    from dgrpo.config import TrainConfig

    text = json.dumps(TrainConfig.model_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")


COMMANDS = {
    "train": train,
    "eval": evaluate,
    "init": init,
    "save-model": save_model,
    "schema": export_schema,
    "serve": serve,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("dgrpo").setLevel(logging.WARNING if quiet else logging.INFO)
    # library chatter that is not ours: transformers' deprecation notes, datasets' progress
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        COMMANDS[args.command](args)
    except DivergedError as error:
        print(f"dgrpo: error: {error}", file=sys.stderr)
        return 1
    except UserError as error:
        print(f"dgrpo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
