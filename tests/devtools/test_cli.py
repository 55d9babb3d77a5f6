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


def test_changes_help_lists_every_flag():
    from devtools import changes

    import argparse

    parser = argparse.ArgumentParser()
    changes.add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
    result = segments("changes", "--help")
    assert flags - {"--help"} == {"--local", "--subscription", "--json", "--max_changes", "--wait_seconds"}
    assert all(flag in result.stdout for flag in flags)


def test_changes_without_a_local_stream_is_a_one_line_error(tmp_path):
    import os

    env = dict(os.environ, SEGMENTS_LIVE_STATE=str(tmp_path / "none.json"))
    result = segments("changes", "--local", "--wait_seconds", "0.5", env=env)
    assert result.returncode == 2
    assert "no `segments stream --local` started within 0.5 s" in result.stderr
    assert "Traceback" not in result.stderr
    assert segments("changes").returncode == 2  # --local or --subscription is required


def test_change_line_reads_like_a_sentence():
    import datetime as dt

    from devtools.changes import change_line

    at = dt.datetime(2026, 1, 1, 12, 3, 7)
    entered = {"user_key": "3f2a9c1e55", "kind": "entered", "to_segment_name": "Cart abandoners",
               "to_rfm_segment": "Prospect", "drivers": [
                   {"feature": "cart_adds_per_session", "before": 0.1, "after": 2.0, "contribution": 3.0}]}
    moved = dict(entered, kind="segment", from_segment_name="Window shoppers", from_rfm_segment="Prospect",
                 to_rfm_segment="New")

    assert change_line(entered, at) == ("12:03:07 u:3f2a9c1e… entered Cart abandoners (rfm Prospect): "
                                        "cart_adds_per_session 0.1 → 2")
    assert change_line(moved, at).startswith("12:03:07 u:3f2a9c1e… Window shoppers → Cart abandoners "
                                             "(rfm Prospect → New): ")
