import subprocess
import sys

import datasets
import pytest

from longblocks.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "riddles"], "unknown task 'riddles'"),
        (["--length", "1k", "--hops", "6,6", "--examples-per-world", "1", "--num-examples", "1"], None),
        (["--hops", "7"], "hops [7] must be between 1 and 6"),
        (["--hops", "0..3"], "must be between 1 and 6"),
        (["--length", "255"], "outside 256..128k"),
        (["--length", "256", "--task", "multihop", "--hops", "3"], "is below what the evidence needs"),
        (["--compositional-share", "1.5"], "compositional_share"),
        (["--length", "32q"], "is not a token count"),
        (["--depth", "0.5,1.5"], "must lie in [0, 1]"),
        (["--depth", "deep"], "is not 'uniform' or a list of numbers"),
        (["--tokenizer", "/no/such/tokenizer"], "cannot load tokenizer"),
        (["--language", "fr"], "invalid languages"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, "generate", "--num-examples", "3", "--out", str(out), *argv)
    if message is None:  # the 6-hop 1k case fits thanks to evidence trimming: it must succeed
        assert code == 0, stderr
        return
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("longblocks: error: ") and message in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_length_below_the_evidence_is_exit_2(capsys, tmp_path, monkeypatch):
    from longblocks.render import context

    monkeypatch.setattr(
        context.ContextBuilder,
        "_shrink_evidence_documents",
        lambda self, placed, budget, keys, rng, whole=frozenset(): (placed, budget),
    )
    # Documents three times their size: no 6-fact chain's documents fit 1k whole.
    whole = context.CountCache.document
    monkeypatch.setattr(context.CountCache, "document", lambda self, doc: 3 * whole(self, doc))
    out = tmp_path / "out"
    code, _, stderr = _run(
        capsys, "generate", "--length", "1k", "--hops", "6", "--num-examples", "3", "--out", str(out)
    )
    assert code == 2 and "below what the evidence needs" in stderr and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_non_empty_out_needs_overwrite(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep me")
    code, _, stderr = _run(capsys, "generate", "--num-examples", "3", "--out", str(out))
    assert code == 2 and "--overwrite" in stderr
    assert (out / "x").read_text() == "keep me"


def test_generate_writes_a_dataset_and_a_summary(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        capsys, "generate", "--length", "1k,2k", "--num-examples", "6", "--seed", "4", "--out", str(out)
    )
    assert code == 0 and "warning" not in stderr
    assert "6 examples" in stdout and "min/median/max 1024/" in stdout
    loaded = datasets.load_from_disk(str(out))
    assert sum(len(split) for split in loaded.values()) == 6


def test_generate_warns_of_a_shortcut_the_audit_finds(capsys, tmp_path, monkeypatch):
    from longblocks import io
    from longblocks.audit import AuditResult

    shortcut = AuditResult(
        name="last-hop most-mentioned", task="multihop", value=0.76, chance=0.27, margin=0.1, n=600
    )
    monkeypatch.setattr(io, "audit_rows", lambda rows, worlds: [shortcut])
    code, stdout, stderr = _run(capsys, "generate", "--num-examples", "3", "--out", str(tmp_path / "out"))
    assert code == 0 and "3 examples" in stdout  # the data is written all the same
    assert stderr.count("\n") == 1 and "multihop last-hop most-mentioned 0.76 > 0.37" in stderr


def test_console_script_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "longblocks.cli", "generate", "--task", "nope", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.strip().startswith("longblocks: error: unknown task")


def test_schemas_command_matches_committed_files(capsys, tmp_path):
    from pathlib import Path

    code, _, _ = _run(capsys, "schemas", "--out", str(tmp_path))
    assert code == 0
    committed = Path(__file__).parents[2] / "schemas"
    for exported in tmp_path.iterdir():
        assert exported.read_text() == (committed / exported.name).read_text(), (
            f"schemas/{exported.name} is stale: run `longblocks schemas`"
        )
