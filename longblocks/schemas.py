"""JSON Schemas exported from the pydantic models: the files in `schemas/` are generated here.

`longblocks schemas` rewrites them; a test fails when a committed file differs from the
export, so the published schemas can never drift from the code.
"""

import json
from pathlib import Path

from longblocks.config import BuildConfig
from longblocks.row import Row
from longblocks.world.schema import World

MODELS = {"row": Row, "world": World, "build_config": BuildConfig}


def schema_texts() -> dict[str, str]:
    """File name -> JSON text for every exported schema."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in MODELS.items()
    }


def export(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_texts().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
