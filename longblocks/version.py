"""Which generator made a dataset: the package version plus a hash of its code and templates.

The package version moves with releases; the hash moves with any edit to the generator's Python
files or jinja2 templates, which can change the rows a config draws. Recorded in generation.json and
in every shard's manifest (`merge` refuses shards of two generators), printed by `longblocks
--version`, and compared by dgrpo's study before it reuses a generated folder.
"""

import hashlib
from functools import cache
from pathlib import Path

from longblocks import __version__
from longblocks.render.env import TEMPLATES_DIR

PACKAGE = Path(__file__).resolve().parent


@cache
def generator_version() -> str:
    """`<package version>+<16 hex digits of the code hash>`, e.g. `0.1.0+3f9c0a1b2d4e5f60`."""
    digest = hashlib.sha256()
    for folder, pattern in ((PACKAGE, "*.py"), (TEMPLATES_DIR, "*")):
        files = sorted(f for f in folder.rglob(pattern) if f.is_file() and "__pycache__" not in f.parts)
        for file in files:
            digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"
