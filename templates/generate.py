"""Generates the Flex Template files that must not drift from the code.

* ``templates/<name>/metadata.json`` from the pipeline's options classes: one
  parameter per flag the pipeline declares (Beam's own flags excluded), with its
  help text (which states the default), whether it is optional, and regexes where
  the flag has a format (choices, numbers, gs:// paths, subscription paths).
* ``templates/bigquery/ddl/<table>.sql`` from the table schemas
  (`transforms.bigquery.admin.render_ddl`).

Regenerate after changing a flag or a table, and commit the result::

    python templates/generate.py           # writes the files
    python templates/generate.py --check   # exits 1 when a committed file is stale

``tests/templates/test_templates.py`` fails when the committed files differ from the output.
The image's requirements are the workers' lock, ``locks/base.txt`` (``make lock``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import pathlib
import re
import sys
from typing import Iterable, Mapping, Optional, Sequence


ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
PYPROJECT = ROOT / "pyproject.toml"

GCS_PATH = r"^gs://[a-z0-9][-_.a-z0-9]*[a-z0-9]/.+$"
POSITIVE_INT = r"^[1-9][0-9]*$"
POSITIVE_FLOAT = r"^(?!0*\.?0*$)(?:[0-9]+\.?[0-9]*|\.[0-9]+)$"
BOOLEAN = r"^(true|false)$"
SUBSCRIPTION = r"^projects/[^/]+/subscriptions/[^/]+$"
TOPIC = r"^projects/[^/]+/topics/[^/]+$"
PROJECT_ID = r"^(?:[a-z][-.a-z0-9]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$"
DATASET_ID = r"^[A-Za-z0-9_]{1,1024}$"
HTTP_URL = r"^https?://[^/\s]+(?:/\S*)?$"

# Formats of flags whose type is a plain string: on Dataflow a path must be gs://.
FORMATS = {
    "input": GCS_PATH,
    "suppression_list": GCS_PATH,
    "id_key_file": GCS_PATH,
    "model": GCS_PATH,
    "bq_project": PROJECT_ID,
    "bq_dataset": DATASET_ID,
    "bq_endpoint": HTTP_URL,
}
# Formats of flags by their argparse `type=` function's name.
TYPE_FORMATS = {
    "positive_int": POSITIVE_INT,
    "bounded_int": POSITIVE_INT,  # a range the regex does not express: the job checks it
    "positive_float": POSITIVE_FLOAT,
    "int": r"^-?[0-9]+$",
    "float": r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$",
    "subscription_path": SUBSCRIPTION,
    "topic_path": TOPIC,
}
_LABEL_WORDS = {"bq": "BigQuery", "id": "ID", "us": "µs"}


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """One Flex Template: which pipeline, which options classes, which entry point."""

    name: str
    title: str
    description: str
    streaming: bool
    options: str  # "module:Class" of the pipeline's options

    def options_classes(self) -> list[type]:
        """The classes declaring the pipeline's flags, in the order Beam parses them."""
        module, cls = self.options.split(":")
        return load_launcher().declaring_classes(getattr(importlib.import_module(module), cls))


SPECS = (
    TemplateSpec(
        name="batch",
        title="Behavioural segments: batch backfill",
        description="Reads event files (JSON lines or Avro on GCS), applies consent, suppression and "
                    "pseudonymisation, computes per-user features, assigns segments with the model and "
                    "MERGEs the assignments into BigQuery (dead letters and a run_audit row included).",
        streaming=False,
        options="pipelines.batch:BatchOptions",
    ),
    TemplateSpec(
        name="streaming",
        title="Behavioural segments: streaming",
        description="Reads JSON events from a Pub/Sub subscription, judges them like batch input, "
                    "updates per-user features with early firings, assigns segments and writes "
                    "assignments and dead letters to BigQuery continuously.",
        streaming=True,
        options="pipelines.streaming:StreamingOptions",
    ),
)


# ----------------------------------------------------------------------------- metadata


def declared_actions(classes: Iterable[type]) -> list[argparse.Action]:
    """The argparse actions the classes' `_add_argparse_args` declare (no Beam flags, no -h)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for cls in classes:
        cls._add_argparse_args(parser)
    return [a for a in parser._actions if a.option_strings]


def flag_name(action: argparse.Action) -> str:
    return action.option_strings[0].lstrip("-")


def is_required(action: argparse.Action) -> bool:
    """argparse-required, or documented "(Required)" (flags Beam re-parses cannot be argparse-required)."""
    return bool(action.required) or (action.help or "").lstrip().startswith("(Required)")


def regexes_of(action: argparse.Action) -> list[str]:
    if action.choices:
        return ["^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return [BOOLEAN]
    type_name = getattr(action.type, "__name__", None)
    if type_name in TYPE_FORMATS:
        return [TYPE_FORMATS[type_name]]
    name = flag_name(action)
    return [FORMATS[name]] if name in FORMATS else []


def label_of(name: str) -> str:
    words = [_LABEL_WORDS.get(w, w) for w in name.split("_")]
    words[0] = words[0][:1].upper() + words[0][1:]
    return " ".join(words)


def _format_default(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def help_text(action: argparse.Action, template_defaults: Mapping[str, str]) -> str:
    """The flag's help, with its default stated (the template's own default when it sets one)."""
    text = " ".join((action.help or "").split())
    name = flag_name(action)
    if name in template_defaults:
        text = re.sub(r"\s*Default:[^.]*\.?\s*$", "", text)
        return f"{text} Default in this template: {template_defaults[name]}."
    if is_required(action) or "Default" in text:
        return text
    return f"{text} Default: {_format_default(action.default)}."


def parameters(actions: Sequence[argparse.Action], template_defaults: Mapping[str, str]) -> list[dict]:
    params = []
    for action in actions:
        name = flag_name(action)
        param = {
            "name": name,
            "label": label_of(name),
            "helpText": help_text(action, template_defaults),
            "isOptional": not is_required(action),
        }
        regexes = regexes_of(action)
        if regexes:
            param["regexes"] = regexes
        params.append(param)
    return params


def load_launcher():
    """The templates' launcher module (its TEMPLATE_DEFAULTS), loaded from its file."""
    module_spec = importlib.util.spec_from_file_location("_template_main", TEMPLATES / "main.py")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def metadata(spec: TemplateSpec) -> dict:
    """The Flex Template metadata of one pipeline."""
    defaults = load_launcher().TEMPLATE_DEFAULTS
    return {
        "name": spec.title,
        "description": spec.description,
        "streaming": spec.streaming,
        "parameters": parameters(declared_actions(spec.options_classes()), defaults),
    }


def metadata_text(spec: TemplateSpec) -> str:
    return json.dumps(metadata(spec), indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------- CLI


def ddl_files() -> dict[pathlib.Path, str]:
    """``CREATE TABLE`` statements of every table, for people who run SQL on BigQuery."""
    from transforms.bigquery.admin import DDL_DIR, render_ddl
    from transforms.bigquery.tables import TABLES

    return {DDL_DIR / f"{spec.name}.sql": render_ddl(spec) for spec in TABLES.values()}


def outputs() -> dict[pathlib.Path, str]:
    files = {TEMPLATES / spec.name / "metadata.json": metadata_text(spec) for spec in SPECS}
    files.update(ddl_files())
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 when a committed file differs; write nothing.")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
