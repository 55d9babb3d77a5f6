"""Flex Template entry point of the streaming job (``FLEX_TEMPLATE_PYTHON_PY_FILE``).

Runs `pipelines.streaming.run` with the launcher's parameters (see ``templates/README.md``).
Locally, the same file can be tried without Dataflow::

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python templates/streaming/main.py \
        --subscription projects/segments-local/subscriptions/events-sub --warehouse local --demo_key
"""

from __future__ import annotations

import logging
import pathlib
import sys
from typing import Optional, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from template_args import boolean_flags, template_argv  # noqa: E402

# Defaults of this template that differ from the command line's (stated in metadata.json).
TEMPLATE_DEFAULTS = {"warehouse": "bigquery"}


def main(argv: Optional[Sequence[str]] = None) -> None:
    from pipelines.options import SegmentsOptions
    from pipelines.streaming import StreamingOptions, run

    argv = sys.argv[1:] if argv is None else argv
    run(template_argv(argv, TEMPLATE_DEFAULTS, boolean_flags([SegmentsOptions, StreamingOptions])))


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
