"""`serving_model`: verified on the launcher, and every worker load pinned to what was verified."""

from __future__ import annotations

import json
import shutil

import pytest

from models.artifact import ArtifactError, sha256_hex
from models.serving import serving_model
from tests.support.models import save_small_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_small_model(str(tmp_path_factory.mktemp("serving") / "model"))


@pytest.fixture()
def folder(saved, tmp_path):
    shutil.copytree(saved, tmp_path / "model")
    return tmp_path / "model"


def _replace_consistently(folder, other_folder) -> str:
    """Another model in `folder`, with the card's digest rewritten to match it."""
    data = (other_folder / "model.joblib").read_bytes()
    (folder / "model.joblib").write_bytes(data)
    card = json.loads((folder / "model_card.json").read_text())
    card["model_sha256"] = sha256_hex(data)
    (folder / "model_card.json").write_text(json.dumps(card))
    return card["model_sha256"]


def test_the_handler_and_the_explainer_load_the_verified_model(folder):
    model = serving_model(str(folder))
    assert model.sha256 == json.loads((folder / "model_card.json").read_text())["model_sha256"]
    assert model.handler.load_model().model_version == model.card["model_version"]
    assert model.explainer.load().model_version == model.card["model_version"]


def test_a_model_replaced_after_submission_is_refused_by_every_worker_load(folder, tmp_path):
    model = serving_model(str(folder))  # no pin given: the verified digest becomes the pin
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    # Another model file (pickle bytes differ in the protocol frame) that its card agrees with.
    data = bytearray((other / "model.joblib").read_bytes())
    (other / "model.joblib").write_bytes(bytes(data) + b"\n")
    _replace_consistently(folder, other)
    with pytest.raises(ArtifactError, match="is not the pinned"):
        model.handler.load_model()
    with pytest.raises(ArtifactError, match="is not the pinned"):
        model.explainer.load()


def test_the_users_pin_is_checked_before_anything_is_built(folder):
    with pytest.raises(ArtifactError, match="is not the pinned"):
        serving_model(str(folder), expected_sha256="0" * 64)
