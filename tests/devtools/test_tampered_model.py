"""A model folder is code: every command that loads a model refuses one it was not pinned to.

The tampered folder is what an attacker who can write the folder would leave: the shipped
card with its digest rewritten to match a new `model.joblib`, a pickle that would create a
directory if it were ever unpickled. Each command gets the shipped model's digest as its
pin and must stop with one line on stderr and exit 2, before unpickling anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil

import pytest

from devtools.cli import main
from models import DEFAULT_MODEL_DIR

PIN = json.loads(open(os.path.join(DEFAULT_MODEL_DIR, "model_card.json")).read())["model_sha256"]


class _RunsCode:
    """Unpickling this creates `path`: proof that the file was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture(scope="module")
def tampered(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tampered")
    folder = root / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    marker = root / "unpickled"
    data = pickle.dumps(_RunsCode(str(marker)), protocol=5)
    (folder / "model.joblib").write_bytes(data)
    card = json.loads((folder / "model_card.json").read_text())
    card["model_sha256"] = hashlib.sha256(data).hexdigest()  # the card agrees with the file
    (folder / "model_card.json").write_text(json.dumps(card))
    events = root / "events.jsonl"
    events.write_text(json.dumps({"event_id": "e1", "user_id": "u1", "event_type": "page_view",
                                  "timestamp": "2026-11-01T10:00:00Z"}) + "\n")
    return {"root": root, "model": str(folder), "marker": marker, "events": str(events)}


# Every command that loads a model, given the tampered folder and the shipped model's pin.
COMMANDS = {
    "run": ["run", "--input", "{events}", "--demo_key", "--model", "{model}", "--model_sha256", PIN],
    "stream": ["stream", "--subscription", "projects/p/subscriptions/s", "--demo_key", "--warehouse", "bigquery",
               "--bq_project", "p", "--model", "{model}", "--model_sha256", PIN],
    "stream --local": ["stream", "--local", "--demo_key", "--seconds", "1", "--model", "{model}",
                       "--model_sha256", PIN],
    "train --previous": ["train", "--input", "{events}", "--out", "{root}/trained", "--demo_key",
                         "--previous", "{model}", "--previous_sha256", PIN],
    "shadow (current model)": ["shadow", "--candidate", DEFAULT_MODEL_DIR, "--model", "{model}",
                               "--model_sha256", PIN],
    "shadow (candidate)": ["shadow", "--candidate", "{model}", "--candidate_sha256", PIN],
    "report": ["report", "--out", "{root}/report.html", "--model", "{model}", "--model_sha256", PIN],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_model_it_was_not_pinned_to(command, tampered, capsys):
    argv = [arg.format(**tampered) for arg in COMMANDS[command]]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "is not the pinned" in lines[0] and PIN in lines[0], err
    assert not tampered["marker"].exists(), "the tampered file was unpickled"


def test_such_a_file_runs_code_when_unpickled(tmp_path):
    """What the refusals above prevent (and proof that the marker can appear at all)."""
    import io

    import joblib

    marker = tmp_path / "ran"
    joblib.load(io.BytesIO(pickle.dumps(_RunsCode(str(marker)), protocol=5)))
    assert marker.exists()
