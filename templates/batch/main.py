"""Flex Template entry point of the batch backfill (``FLEX_TEMPLATE_PYTHON_PY_FILE``).

Runs `pipelines.batch.run` with the launcher's parameters (see ``templates/README.md``).
Locally, the same file can be tried without Dataflow::

    python templates/batch/main.py --input 'data/events-*.jsonl' --warehouse local --demo_key
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
    from pipelines.batch import BatchOptions, run
    from pipelines.options import SegmentsOptions

    argv = sys.argv[1:] if argv is None else argv
    # No `.check()`: under the Flex Template launcher the job is submitted by the launcher,
    # not awaited here, so the summary has no counts to reconcile (see templates/README.md).
    summary = run(template_argv(argv, TEMPLATE_DEFAULTS, boolean_flags([SegmentsOptions, BatchOptions])))
    logging.info("batch template: %s", summary.console_line())


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
