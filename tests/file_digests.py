"""sha256 of every file under a folder, by relative path: compares two outputs byte for byte."""

import hashlib
from pathlib import Path


def file_digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
