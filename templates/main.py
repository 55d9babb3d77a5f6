"""Flex Template entry point (``FLEX_TEMPLATE_PYTHON_PY_FILE``) of both pipelines.

The image's ``SEGMENTS_PIPELINE`` (its ``PIPELINE`` build argument) says which pipeline
this launcher runs; the launcher's parameters become its flags (see ``templates/README.md``
and `template_args`). Locally, the same file can be tried without Dataflow::

    SEGMENTS_PIPELINE=batch python templates/main.py --input 'data/events-*.jsonl' --warehouse local --demo_key
"""

from __future__ import annotations

import importlib
import logging
import os
import pathlib
import sys
from typing import Optional, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from template_args import boolean_flags, declaring_classes, template_argv  # noqa: E402

PIPELINE_ENV = "SEGMENTS_PIPELINE"
# pipeline -> (module, its options class)
PIPELINES = {
    "batch": ("pipelines.batch", "BatchOptions"),
    "streaming": ("pipelines.streaming", "StreamingOptions"),
}
# Defaults of the templates that differ from the command line's (stated in metadata.json).
TEMPLATE_DEFAULTS = {"warehouse": "bigquery"}


def pipeline_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The pipeline's own flags for the launcher's `argv`."""
    module, options = PIPELINES[name]
    options_class = getattr(importlib.import_module(module), options)
    return template_argv(argv, TEMPLATE_DEFAULTS, boolean_flags(declaring_classes(options_class)))


def main(argv: Optional[Sequence[str]] = None, name: Optional[str] = None) -> None:
    name = name or os.environ.get(PIPELINE_ENV, "")
    if name not in PIPELINES:
        raise SystemExit(f"{PIPELINE_ENV} must be one of {', '.join(PIPELINES)}, got {name!r}")
    argv = sys.argv[1:] if argv is None else argv
    job = importlib.import_module(PIPELINES[name][0])
    # No reconciliation check here: under the Flex Template launcher the job is submitted
    # by the launcher, not awaited, so a batch summary has no counts (templates/README.md).
    result = job.run(pipeline_argv(name, argv))
    logging.info("%s template: %s", name, result.console_line() if name == "batch" else result)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
