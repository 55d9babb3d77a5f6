"""The command line: every flag in --help, one-line errors (exit 2, no traceback) for bad input.

The walk runs bad command lines through the real `segments` entry point and checks each:
exit code, one line on stderr, the expected words, no traceback. Command lines that get
past argparse run in subprocesses, two at a time; the ones argparse refuses run in this
process (the same `main`, a second less each).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import pytest

from devtools.cli import COMMANDS, build_parser, main
from models import DEFAULT_MODEL_DIR


def segments(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "devtools.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _flags_of(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {option for action in sub._actions for option in action.option_strings if option.startswith("--")}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_lists_every_flag_it_takes_in_its_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: segments " + command in out
    flags = _flags_of(command)
    assert flags, command
    missing = sorted(flag for flag in flags if flag not in out)
    assert not missing, f"{command} --help does not mention {missing}"


def test_help_from_the_installed_entry_point():
    result = segments("run", "--help")
    assert result.returncode == 0 and "--dead_letter_fallback" in result.stdout


def test_the_run_help_lists_the_shared_flags():
    assert {"--demo_key", "--suppression_list", "--bq_endpoint", "--model", "--model_sha256", "--max_event_bytes",
            "--id_key_file", "--id_key_secret", "--dead_letter_fallback", "--warehouse_port"} <= _flags_of("run")


# ----------------------------------------------------------------------------- the walk


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("walk")
    (root / "dir").mkdir()
    events = root / "events.jsonl"
    events.write_text(json.dumps({"event_id": "e1", "user_id": "u1", "event_type": "page_view",
                                  "timestamp": "2026-11-01T10:00:00Z"}) + "\n")
    (root / "empty_key").write_text("\n")
    (root / "short_key").write_text("short")
    (root / "bad_list.txt").write_text('alice\n"unterminated\n')
    tampered = root / "tampered"
    shutil.copytree(DEFAULT_MODEL_DIR, tampered)
    data = bytearray((tampered / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 1
    (tampered / "model.joblib").write_bytes(bytes(data))
    nan_card = root / "nan_card"
    shutil.copytree(DEFAULT_MODEL_DIR, nan_card)
    card = json.loads((nan_card / "model_card.json").read_text())
    card["bgnbd"]["r"] = float("nan")
    (nan_card / "model_card.json").write_text(json.dumps(card))
    return root


RUN = ["run", "--input", "{root}/events.jsonl", "--demo_key", "--bq_endpoint", "http://127.0.0.1:9"]
# (name, argv, exit code, words the one line must hold): command lines argparse refuses.
REFUSED_BY_ARGPARSE = [
    ("generate into a directory", ["generate", "--out", "{root}/dir"], 2, "is a directory"),
    ("generate too many users", ["generate", "--out", "{root}/g.jsonl", "--users", "100000000000"], 2, "at most"),
    ("bad pin", RUN + ["--model_sha256", "xyz"], 2, "64 hex digits"),
    ("huge silence", RUN + ["--max_silent_days", "100000000"], 2, "at most 3,650"),
    ("negative history", RUN + ["--history_days", "-1"], 2, "from 0 to 3,650"),
    ("infinite gap", RUN + ["--session_gap_minutes", "inf"], 2, "positive number"),
    ("unknown flag", ["run", "--input", "x.jsonl", "--imput", "y"], 2, "unrecognized arguments: --imput"),
    ("bad choice", ["run", "--input", "x.jsonl", "--consent_default", "maybe"], 2, "invalid choice: 'maybe'"),
    ("negative bytes", ["run", "--input", "x.jsonl", "--max_event_bytes", "-5"], 2, "must be a positive integer"),
    ("input missing", ["run"], 2, "the following arguments are required: --input"),
    ("no such command", ["nosuchcommand"], 2, "invalid choice: 'nosuchcommand'"),
    ("warehouse port out of range", ["warehouse", "start", "--port", "80"], 2, "port number"),
    ("report without --out", ["report"], 2, "the following arguments are required: --out"),
    ("report with a bad date", ["report", "--out", "{root}/r.html", "--from", "2026-13-01"], 2,
     "expected a date YYYY-MM-DD"),
    ("shadow without a candidate", ["shadow"], 2, "the following arguments are required: --candidate"),
    ("shadow with a tiny page", ["shadow", "--candidate", "x", "--page_size", "5"], 2, "from 100 to 1,000,000"),
]
# Command lines that get past argparse: run as a user would.
WALK = [
    ("directory as input", ["run", "--input", "{root}/dir", "--demo_key"], 2, "is a directory"),
    ("no file matches", ["run", "--input", "/nonexistent/*.jsonl", "--demo_key"], 2, "matches no file"),
    ("summary is a directory", RUN + ["--summary", "{root}/dir"], 2, "--summary {root}/dir is a directory"),
    ("summary folder missing", RUN + ["--summary", "{root}/nowhere/s.json"], 2, "does not exist"),
    ("missing suppression list", RUN + ["--suppression_list", "{root}/none.txt"], 2, "does not exist"),
    ("malformed suppression list", RUN + ["--suppression_list", "{root}/bad_list.txt"], 2, "line 2"),
    ("tampered model", RUN + ["--model", "{root}/tampered"], 2, "refusing to unpickle"),
    ("card with a NaN", RUN + ["--model", "{root}/nan_card"], 2, "BG/NBD parameter r is nan"),
    ("missing model", RUN + ["--model", "{root}/no_model"], 2, "cannot read"),
    ("model not the pinned one", RUN + ["--model_sha256", "0" * 64], 2, "not the pinned"),
    ("empty key file", RUN + ["--id_key_file", "{root}/empty_key"], 2, "is empty"),
    ("missing key file", RUN + ["--id_key_file", "{root}/no_key"], 2, "cannot read the key file"),
    ("no key on Dataflow", RUN + ["--runner", "DataflowRunner"], 2, "no pseudonymisation key for a DataflowRunner"),
    ("short key on Dataflow", RUN + ["--runner", "DataflowRunner", "--id_key_file", "{root}/short_key"], 2,
     "5-byte key"),
    ("unreachable warehouse", RUN, 2, "cannot reach the warehouse at http://127.0.0.1:9"),
    ("erase without ids file", ["erase", "--user_ids", "{root}/none.txt", "--suppression_list", "{root}/s.txt",
                                "--demo_key"], 2, "does not exist"),
    ("erase with a malformed ids file", ["erase", "--user_ids", "{root}/bad_list.txt", "--suppression_list",
                                         "{root}/s.txt"], 2, "line 2"),
    ("erase into a directory", ["erase", "--user_ids", "{root}/events.jsonl", "--suppression_list", "{root}/dir",
                                "--demo_key"], 2, "is a directory"),
    ("query with both", ["query", "SELECT 1", "--view", "current_segment"], 2, "either a SQL query or --view"),
    ("report into a directory", ["report", "--out", "{root}/dir"], 2, "--out {root}/dir is a directory"),
    ("report from after to", ["report", "--out", "{root}/r.html", "--from", "2026-02-01", "--to", "2026-01-01"], 2,
     "--from 2026-02-01 is after --to 2026-01-01"),
    ("report of a missing model", ["report", "--out", "{root}/r.html", "--model", "{root}/no_model"], 2,
     "cannot read"),
    ("shadow with a missing candidate", ["shadow", "--candidate", "{root}/no_model"], 2, "cannot read"),
    ("shadow with a tampered candidate", ["shadow", "--candidate", "{root}/tampered"], 2, "refusing to unpickle"),
]


@pytest.mark.parametrize("name, argv, code, words", REFUSED_BY_ARGPARSE, ids=[c[0] for c in REFUSED_BY_ARGPARSE])
def test_what_argparse_refuses_is_one_line_and_exit_2(files, capsys, name, argv, code, words):
    with pytest.raises(SystemExit) as done:
        main([a.format(root=files) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], err
    assert done.value.code == code


@pytest.fixture(scope="module")
def walked(files):
    env = {k: v for k, v in os.environ.items() if k != "SEGMENTS_ID_KEY"}
    env["SEGMENTS_WAREHOUSE_DIR"] = str(files / "warehouse")  # a command that starts one must not touch others

    def one(case):
        name, argv, _, _ = case
        return name, segments(*[a.format(root=files) for a in argv], env=env)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, WALK))


@pytest.mark.parametrize("name, argv, code, words", WALK, ids=[case[0] for case in WALK])
def test_bad_input_is_one_line_and_exit_2_without_a_traceback(walked, files, name, argv, code, words):
    result = walked[name]
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert words.format(root=files) in lines[0]
    assert result.returncode == code, result.stderr


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
    moment = dict(entered, kind="moment", from_moment="active_as_usual", to_moment="checkout_friction",
                  moment_reason="7 days: 3 checkout attempts without a purchase")
    assert change_line(moment, at) == ("12:03:07 u:3f2a9c1e… moment active_as_usual → checkout_friction "
                                       "(segment Cart abandoners): 7 days: 3 checkout attempts without a purchase")
