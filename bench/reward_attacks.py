"""Reward attacks and natural answer forms on a generated dataset: mean reward per task and language.

Prints two markdown tables (rows: attack or form; columns: task/kind × language; cells: mean
reward over the rows of that column) from `longblocks.attacks`, the numbers docs/rewards.md
bounds. Long-form paraphrases need the worlds, which are read from `<dataset>/worlds/`.

Run: .venv/bin/python bench/reward_attacks.py DATASET_DIR
"""

import argparse
from pathlib import Path

import datasets

from longblocks.attacks import format_table, reward_attack_table
from longblocks.world.graph import WorldGraph
from longblocks.world.schema import World


def markdown(records: list[dict]) -> str:
    columns = sorted({(r["task"], r["kind"], r["language"]) for r in records})
    names = list(dict.fromkeys(r["attack"] for r in records))
    cell = {(r["attack"], r["task"], r["kind"], r["language"]): r for r in records}
    head = ["response"] + [f"{t}/{k} {lang}" if t == "grounding" else f"{t} {lang}" for t, k, lang in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        values = [cell.get((name, *c)) for c in columns]
        lines.append("| " + " | ".join([name] + [f"{v['mean']:.2f}" if v else "" for v in values]) + " |")
    n = [max(r["n"] for r in records if (r["task"], r["kind"], r["language"]) == c) for c in columns]
    lines.append("| rows | " + " | ".join(str(x) for x in n) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    args = parser.parse_args()
    dataset = datasets.load_from_disk(str(args.dataset))
    rows = [row for split in dataset.values() for row in split]
    graphs = {
        path.stem: WorldGraph(World.model_validate_json(path.read_text(encoding="utf-8")))
        for path in sorted((args.dataset / "worlds").glob("*.json"))
    }
    print("Attacks\n\n" + markdown(reward_attack_table(rows, graphs)))
    print("\nNatural correct forms\n\n" + markdown(format_table(rows, graphs)))


if __name__ == "__main__":
    main()
