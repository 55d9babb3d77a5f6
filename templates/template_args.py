"""Turns the arguments a Flex Template launcher passes into the pipeline's own.

The launcher runs ``FLEX_TEMPLATE_PYTHON_PY_FILE`` with every parameter as
``--name=value``. Three things differ from a command line:

* a boolean flag (``action="store_true"``) arrives as ``--demo_key=true``, which
  argparse refuses: ``=true`` becomes the bare flag, ``=false`` drops it;
* the template's own defaults (``TEMPLATE_DEFAULTS`` of each ``main.py``, e.g.
  ``--warehouse=bigquery``) come first, so a parameter given at launch overrides them;
* the workers run this very image: ``--sdk_container_image`` defaults to the
  ``SEGMENTS_SDK_CONTAINER_IMAGE`` the image was built with.
"""

from __future__ import annotations

import argparse
import os
from typing import Iterable, Mapping, Optional, Sequence

SDK_IMAGE_ENV = "SEGMENTS_SDK_CONTAINER_IMAGE"


def declaring_classes(options_class: type) -> list[type]:
    """The classes of `options_class`'s MRO that declare flags of their own, base first
    (the order Beam parses them in)."""
    return [cls for cls in reversed(options_class.mro()) if "_add_argparse_args" in cls.__dict__]


def boolean_flags(options_classes: Iterable[type]) -> frozenset[str]:
    """Names (without dashes) of the store_true / store_false flags the classes declare."""
    parser = argparse.ArgumentParser(add_help=False)
    for cls in options_classes:
        cls._add_argparse_args(parser)
    return frozenset(
        option.lstrip("-")
        for action in parser._actions
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        for option in action.option_strings
    )


def _given(argv: Sequence[str], name: str) -> bool:
    return any(arg == f"--{name}" or arg.startswith(f"--{name}=") for arg in argv)


def template_argv(argv: Sequence[str], defaults: Mapping[str, str], booleans: Iterable[str],
                  environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """The pipeline's argv for the launcher's `argv`.

    Args:
        argv: what the launcher passed (``sys.argv[1:]``).
        defaults: the template's defaults, flag name -> value.
        booleans: names of boolean flags (see `boolean_flags`).
        environ: the environment (default ``os.environ``).

    Raises:
        ValueError: a boolean flag with a value other than true/false.
    """
    environ = os.environ if environ is None else environ
    booleans = frozenset(booleans)
    out = [f"--{name}={value}" for name, value in defaults.items() if not _given(argv, name)]
    image = environ.get(SDK_IMAGE_ENV)
    if image and not _given(argv, "sdk_container_image"):
        out.append(f"--sdk_container_image={image}")
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and name.startswith("--") and name[2:] in booleans:
            if value.lower() == "true":
                out.append(name)
            elif value.lower() != "false":
                raise ValueError(f"{name} takes true or false, got {value!r}")
            continue
        out.append(arg)
    return out
