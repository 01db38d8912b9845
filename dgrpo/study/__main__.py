"""`python -m dgrpo.study CONFIG`: run the study (cached stages) and write its report.

The last line printed is `sft=<acc> kd=<acc> grpo=<acc> opd=<acc> dgrpo=<acc> teacher=<acc>
student0=<acc>` (held-out accuracy). A bad config exits 2 with one line.
"""

import argparse
import logging
import sys
import time
import warnings

from dgrpo.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dgrpo.study", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="study YAML, e.g. configs/study/full.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("dgrpo.study").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from dgrpo.study.config import load_study_config
    from dgrpo.study.pipeline import run_study
    from dgrpo.study.report import write_report

    start = time.perf_counter()
    try:
        cfg = load_study_config(args.config)
        study = run_study(cfg)
        line = write_report(cfg, study, time.perf_counter() - start, args.config)
    except UserError as error:
        print(f"dgrpo.study: error: {error}", file=sys.stderr)
        return 2
    print(f"report: {cfg.report_dir}/results.md")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
