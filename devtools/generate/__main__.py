"""`python -m devtools.generate ...`."""

from devtools.generate.cli import run

run()
