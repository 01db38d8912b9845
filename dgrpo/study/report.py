"""docs/results.md and its plots from the study's runs: held-out accuracy and reward per method
(mean ± sd over seeds), reward and KL curves, and an accuracy heatmap (length × depth) per method."""

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import datasets
import jinja2

from dgrpo.evaluate import plot_heatmap, summarize
from dgrpo.study.assets import parameter_counts
from dgrpo.study.config import StudyConfig
from dgrpo.study.pipeline import TIMINGS, stamp_of
from dgrpo.study.reader import ARGUMENTS
from dgrpo.study.reading import held_out_rows, mean_reading, reading

TEMPLATE = Path(__file__).with_name("results.md.jinja")
PAIRED_MIN_ROWS = 20  # held-out rows a normal-approximation interval needs
SIGNAL_WINDOW = 10  # steps at each end of a run over which the signal table averages


def overall(result: dict) -> dict:
    return summarize(result["records"])["overall"]


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def method_table(runs: dict, methods: list[str], key: str = "records") -> dict[str, dict]:
    """method -> {accuracy: (mean, sd), reward: (mean, sd), per_seed: [...]} over seeds, on the
    held-out records (key "records") or the retention probe's ("retention")."""
    table = {}
    for method in methods:
        cells = [
            summarize(res[key])["overall"] for (m, _), (_, res) in runs.items() if m == method and res[key]
        ]
        if not cells:
            continue
        table[method] = {
            "accuracy": mean_sd([c["accuracy"] for c in cells]),
            "reward": mean_sd([c["reward"] for c in cells]),
            "per_seed": [round(c["accuracy"], 3) for c in cells],
        }
    return table


def metric_rows(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per step (trainer runs and the reader loop alike)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def response_losses(run_dir: Path) -> list[float]:
    """Per-step loss on response tokens: the reader's `response_nll`, or an sft run's `loss`."""
    rows = metric_rows(run_dir)
    key = "response_nll" if "response_nll" in rows[0] else "loss"
    return [row[key] for row in rows]


def curves(runs: dict, methods: list[str], name: str) -> dict[str, list[float]]:
    """method -> the seed-mean of a logged metric per step (methods that log it)."""
    out = {}
    for method in methods:
        series = []
        for (m, _), (run_dir, _) in runs.items():
            if m != method:
                continue
            rows = metric_rows(run_dir)
            if name in rows[0]:
                series.append([row[name] for row in rows])
        if series:
            out[method] = [statistics.fmean(values) for values in zip(*series, strict=True)]
    return out


def training_signal(runs: dict, methods: list[str], window: int = SIGNAL_WINDOW) -> dict[str, dict]:
    """method -> where its learning signal came from, as seed means: `flat`, the share of rollout
    groups whose rewards were all equal (zero advantage: no reward signal), and (first, last) means
    of the training reward and of the reverse KL to the teacher over `window` steps at each end
    (None where the method does not log it). Only the methods that sample (grpo, opd, dgrpo)."""
    out = {}
    for method in methods:
        logs = [metric_rows(run_dir) for (m, _), (run_dir, _) in runs.items() if m == method]
        if not logs or "frac_reward_zero_std" not in logs[0][0]:
            continue
        out[method] = {
            "flat": statistics.fmean(
                statistics.fmean(row["frac_reward_zero_std"] for row in rows) for rows in logs
            ),
            "reward": _ends(logs, "reward/mean", window),
            "kl": _ends(logs, "kl_teacher", window),
        }
    return out


def _ends(logs: list[list[dict]], key: str, window: int) -> tuple[float, float] | None:
    """(mean of `key` over the first `window` steps, over the last), each averaged over runs."""
    if key not in logs[0][0]:
        return None
    first = statistics.fmean(statistics.fmean(row[key] for row in rows[:window]) for rows in logs)
    return first, statistics.fmean(statistics.fmean(row[key] for row in rows[-window:]) for rows in logs)


def response_nll(run_dir: Path, upto: int | None = None, last: int = 10) -> float:
    """Mean per-response-token loss over the `last` steps up to step `upto` (default: the end) of
    an sft or reader run: how far a teacher or a student snapshot got."""
    losses = response_losses(run_dir)
    return statistics.fmean((losses[:upto] if upto else losses)[-last:])


def baselines(data_dir: Path, task: str) -> dict[str, float]:
    """{'chance': one guess among the context's entities of the answer's type, 'shortcut': the
    strongest answer-picking baseline of the data's audit, 'shortcut_name'}; {} without audit.json."""
    path = data_dir / "audit.json"
    if not path.is_file():
        return {}
    records = [r for r in json.loads(path.read_text()) if r["task"] == task and r["chance"] > 0]
    if not records:
        return {}
    best = max(records, key=lambda r: r["value"])
    return {"chance": records[0]["chance"], "shortcut": best["value"], "shortcut_name": best["name"]}


def verdicts(table: dict[str, dict], method: str = "dgrpo", rows: dict | None = None) -> list[dict]:
    """`method` against each other method: the difference of mean accuracy and whether it exceeds
    the seed spread (the sum of the two standard deviations); with `rows` (method -> row id ->
    accuracy, `per_row_accuracy`) also the 95% interval of that difference over held-out rows."""
    if method not in table:
        return []
    (mean, sd) = table[method]["accuracy"]
    out = []
    for other, cell in table.items():
        if other == method:
            continue
        other_mean, other_sd = cell["accuracy"]
        diff = mean - other_mean
        verdict = {"other": other, "diff": diff, "spread": sd + other_sd, "beyond": abs(diff) > sd + other_sd}
        if rows and method in rows and other in rows:
            low, high, n = paired_interval(rows[method], rows[other])
            interval = None if math.isinf(high) else (low, high)  # too few rows for one
            verdict |= {"interval": interval, "rows": n, "rows_beyond": low > 0 or high < 0}
        out.append(verdict)
    return out


def per_row_accuracy(runs: dict, method: str) -> dict[str, float]:
    """Held-out row id -> the share of `method`'s seeds that answered it right."""
    hits = defaultdict(list)
    for (m, _), (_, result) in runs.items():
        if m == method:
            for record in result["records"]:
                hits[record["id"]].append(record["reward"] >= 1.0)
    return {row: statistics.fmean(seeds) for row, seeds in hits.items()}


def paired_interval(a: dict[str, float], b: dict[str, float], z: float = 1.96) -> tuple[float, float, int]:
    """(low, high, rows): the 95% interval (normal approximation) of the mean difference a − b
    over the rows both were scored on; (-inf, inf) below PAIRED_MIN_ROWS rows. Every run answers
    the same held-out rows, so the seed spread says how much training varies, and this says
    whether that many rows can tell the two methods apart at all: with 80 rows near accuracy 0.2
    a single run's accuracy is ± 0.09."""
    shared = sorted(a.keys() & b.keys())
    diffs = [a[row] - b[row] for row in shared]
    if len(diffs) < PAIRED_MIN_ROWS:
        return -math.inf, math.inf, len(diffs)
    mean = statistics.fmean(diffs)
    half = z * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean - half, mean + half, len(diffs)


def stage_minutes(root: Path) -> dict[str, float]:
    """Minutes of each stage the last time it did work (the pipeline's timings.json; the reader
    loop's done.json counts the teacher across resumed sessions), in the order they run."""
    path = root / TIMINGS
    seconds = json.loads(path.read_text()) if path.is_file() else {}
    done = root / "teacher" / "done.json"
    if done.is_file():
        seconds["teacher"] = json.loads(done.read_text())["seconds"]
    order = ("data", "teacher", "student0", "runs")
    return {stage: seconds[stage] / 60 for stage in order if stage in seconds}


def plot_reader(run_dir: Path, path: Path, snapshot: int | None) -> None:
    """The teacher's response-token loss per step (20-step mean), the student's snapshot marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = response_losses(run_dir)
    smooth = [statistics.fmean(values[max(0, i - 19) : i + 1]) for i in range(len(values))]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(range(1, len(values) + 1), smooth, label="teacher")
    if snapshot:
        ax.axvline(snapshot, color="grey", linestyle="--", label="student0 snapshot")
    ax.set_xlabel("step")
    ax.set_ylabel("response-token loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(series: dict[str, list[float]], ylabel: str, path: Path, smooth: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method, values in series.items():
        window = [statistics.fmean(values[max(0, i - smooth + 1) : i + 1]) for i in range(len(values))]
        ax.plot(range(1, len(values) + 1), window, label=method)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel}: mean over seeds, {smooth}-step moving average", fontsize=9)
    if series:
        ax.legend()
    else:  # e.g. a study of sft and kd only: no run samples, so none logs a reward
        ax.text(0.5, 0.5, "no method of this study logs it", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(cfg: StudyConfig, study: dict, seconds: float, config_path: str) -> str:
    """Write results.md and PNGs into cfg.report_dir; returns the one-line summary."""
    report_dir = Path(cfg.report_dir)
    figures = report_dir / "results"
    figures.mkdir(parents=True, exist_ok=True)
    methods = cfg.compare.methods
    table = method_table(study["runs"], methods)
    plot_curves(curves(study["runs"], methods, "reward/mean"), "training reward", figures / "reward.png")
    plot_curves(curves(study["runs"], methods, "kl_teacher"), "reverse KL to the teacher", figures / "kl.png")
    for method in methods:
        records = [r for (m, _), (_, res) in study["runs"].items() if m == method for r in res["records"]]
        grid = summarize(records)["by_length_depth"]
        plot_heatmap(grid, figures / f"heatmap-{method}.png", title=f"{method}: held-out accuracy")
    teacher, student0 = overall(study["teacher"]), overall(study["student0"])
    retention = {}
    if study["student0"]["retention"]:  # before, then after each method
        before = summarize(study["student0"]["retention"])["overall"]["accuracy"]
        retention = {"student0": {"accuracy": (before, 0.0)}} | method_table(
            study["runs"], methods, "retention"
        )
    sizes = {
        role: parameter_counts(Path(path))
        for role, path in (("teacher", study["teacher_init"]), ("student", study["student_init"]))
        if path and Path(path, "config.json").is_file()
    }
    root, snapshot = Path(study["root"]), cfg.student.from_teacher_step
    arguments = root / "teacher" / ARGUMENTS  # what the reader ran with (autocast: auto resolved)
    teacher_bf16 = arguments.is_file() and json.loads(arguments.read_text()).get("autocast") == "bf16"
    plot_reader(root / "teacher", figures / "teacher.png", snapshot)
    losses = {"teacher": response_nll(root / "teacher")}
    student_run = (root / "teacher", snapshot) if snapshot else (root / "student0", None)
    losses["student0"] = response_nll(*student_run)
    has_rows = (root / "data" / "dataset_dict.json").is_file()
    dataset = datasets.load_from_disk(str(root / "data")) if has_rows else {}
    rows = held_out_rows(dataset, ("validation", "test"))
    train_rows = dataset["train"].num_rows if has_rows else 0
    generator = (stamp_of(root / "data") or {}).get("generator")  # `longblocks --version` of the rows
    reads = {"teacher": reading(study["teacher"]["records"], rows),
             "student0": reading(study["student0"]["records"], rows)}  # fmt: skip
    for method in methods:
        cells = [reading(res["records"], rows) for (m, _), (_, res) in study["runs"].items() if m == method]
        reads[method] = mean_reading(cells)
    text = jinja2.Template(TEMPLATE.read_text(encoding="utf-8"), undefined=jinja2.StrictUndefined).render(
        cfg=cfg, table=table, teacher=teacher, student0=student0, sizes=sizes, minutes=seconds / 60,
        methods=methods, retention=retention, config_path=config_path, losses=losses,
        baselines=baselines(root / "data", cfg.data.task),
        verdicts=verdicts(table, rows={m: per_row_accuracy(study["runs"], m) for m in methods}),
        reads=reads if rows else {}, stages=stage_minutes(root), train_rows=train_rows,
        teacher_bf16=teacher_bf16, signal=training_signal(study["runs"], methods),
        signal_window=SIGNAL_WINDOW, generator=generator,
    )  # fmt: skip
    (report_dir / "results.md").write_text(text, encoding="utf-8")
    accuracies = {m: table[m]["accuracy"][0] for m in methods}
    parts = [f"{m}={accuracies[m]:.3f}" for m in methods]
    return " ".join([*parts, f"teacher={teacher['accuracy']:.3f}", f"student0={student0['accuracy']:.3f}"])
