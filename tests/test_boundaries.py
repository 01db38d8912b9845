"""Architecture rules: which package may import which."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _imports(package: str) -> set[str]:
    """Every absolute module a package imports, including imports inside functions."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
    return found


def test_longblocks_never_imports_dgrpo():
    assert not [m for m in _imports("longblocks") if m.split(".")[0] == "dgrpo"]


def test_dgrpo_imports_only_rewards_row_and_tokenizer_from_longblocks():
    used = {m for m in _imports("dgrpo") if m.split(".")[0] == "longblocks"}
    # longblocks.tokenizer: the embedded offline Qwen3 tokenizer, one public home for both packages
    assert used <= {"longblocks.rewards", "longblocks.row", "longblocks.tokenizer"}
    assert "longblocks.tokenizer" in used


def test_importing_rewards_pulls_no_generator_dependencies():
    code = (
        "import sys, longblocks.rewards; "
        "print(sorted(m for m in ('networkx', 'faker', 'jinja2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
