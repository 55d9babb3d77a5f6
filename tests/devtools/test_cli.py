"""The command line: help on every subcommand, one-line errors for bad input."""

import subprocess
import sys

import pytest

from devtools.cli import COMMANDS


def segments(*args, env=None):
    return subprocess.run([sys.executable, "-m", "devtools.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command):
    result = segments(command, "--help")
    assert result.returncode == 0
    assert "usage: segments " + command in result.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "--input", "/nonexistent/*.jsonl", "--demo_key"], "matches no file"),
    (["run", "--input", "x.jsonl", "--imput", "y"], "unrecognized arguments: --imput"),
    (["run", "--input", "x.jsonl", "--consent_default", "maybe"], "invalid choice: 'maybe'"),
    (["run", "--input", "x.jsonl", "--max_event_bytes", "-5"], "must be a positive integer"),
    (["run"], "the following arguments are required: --input"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
])
def test_bad_input_is_one_line_without_trace(args, message):
    result = segments(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_dataflow_job_without_a_key_is_a_one_line_error(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"event_id": "a"}\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "SEGMENTS_ID_KEY"}
    result = segments("run", "--input", str(path), "--demo_key", "--runner", "DataflowRunner", env=env)
    assert result.returncode == 1
    assert "no pseudonymisation key" in result.stderr
    assert "Traceback" not in result.stderr
