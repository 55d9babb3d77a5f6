"""Segmentation model: training, artifacts, scores and serving (see models/README in the top-level README)."""

import pathlib

# The pre-trained model the product ships with (how it was made: models/default/HOW_TO_REPRODUCE.md).
DEFAULT_MODEL_DIR = str(pathlib.Path(__file__).parent / "default")
