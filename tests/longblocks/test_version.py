"""longblocks.version: the generator version moves with its code and templates, and the CLI prints it."""

import re

import pytest

from longblocks import __version__, version
from longblocks.cli import main


@pytest.fixture
def fresh(monkeypatch):
    """generator_version recomputed on each call (it is cached per process)."""
    version.generator_version.cache_clear()
    yield
    version.generator_version.cache_clear()


def test_the_version_is_the_release_plus_a_code_hash(fresh):
    found = version.generator_version()
    assert re.fullmatch(rf"{re.escape(__version__)}\+[0-9a-f]{{16}}", found)
    version.generator_version.cache_clear()
    assert version.generator_version() == found  # the same files: the same hash


def test_an_edited_template_or_module_gives_another_version(fresh, tmp_path, monkeypatch):
    templates, package = tmp_path / "templates", tmp_path / "package"
    (templates / "en").mkdir(parents=True)
    package.mkdir()
    (templates / "en" / "question.jinja").write_text("What is {{ x }}?")
    (package / "build.py").write_text("LIMIT = 3\n")
    monkeypatch.setattr(version, "TEMPLATES_DIR", templates)
    monkeypatch.setattr(version, "PACKAGE", package)
    seen = [version.generator_version()]
    for file, text in (
        (templates / "en" / "question.jinja", "Which is {{ x }}?"),
        (package / "build.py", "LIMIT = 4\n"),
    ):
        file.write_text(text)
        version.generator_version.cache_clear()
        seen.append(version.generator_version())
    (package / "notes.txt").write_text("not code")  # only Python files of the package count
    version.generator_version.cache_clear()
    assert len(set(seen)) == 3 and version.generator_version() == seen[-1]


def test_the_cli_prints_it(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"longblocks {version.generator_version()}"
