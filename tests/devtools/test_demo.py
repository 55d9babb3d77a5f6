"""`segments demo`: the default simulation is the shipped model's shop; a shorter one says it is young."""

from __future__ import annotations

import argparse

from devtools import demo
from models import DEFAULT_MODEL_DIR
from models.artifact import load_card


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args([])


def test_the_default_demo_simulates_the_period_the_shipped_model_was_trained_on():
    card = load_card(DEFAULT_MODEL_DIR)
    args = _defaults()
    assert args.days == demo.training_days(card) == 365
    assert demo.young_shop_note(args.days, card) == ""


def test_a_shorter_demo_is_explained_as_a_young_shop():
    card = {"training": {"data_start": "2025-08-03T01:07:14.954000Z", "data_end": "2026-08-03T00:00:00Z"}}
    note = demo.young_shop_note(30, card)
    assert note.startswith("a young shop: 30 days of history against a model trained on 365")
    assert "drift" in note and "Prospect" in note
