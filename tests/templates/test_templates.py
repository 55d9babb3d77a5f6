"""Flex Templates: metadata.json mirrors the pipeline flags, generated files are fresh.

The flags are read here independently of the generator, from the argparse actions the
options classes declare; Beam's own flags must not appear in the metadata.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import sys

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.batch import BatchOptions
from pipelines.options import FileInputOptions, SegmentsOptions
from pipelines.streaming import StreamingOptions, subscription_path

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
OPTIONS = {"batch": (SegmentsOptions, FileInputOptions, BatchOptions), "streaming": (SegmentsOptions, StreamingOptions)}
REQUIRED = {"batch": {"input"}, "streaming": {"subscription"}}
STREAMING = {"batch": False, "streaming": True}


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generate():
    return _load(TEMPLATES / "generate.py", "_templates_generate")


@pytest.fixture(scope="module")
def template_args():
    return _load(TEMPLATES / "template_args.py", "_templates_template_args")


def pipeline_actions(name: str) -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser(add_help=False)
    for cls in OPTIONS[name]:
        cls._add_argparse_args(parser)
    actions = {}
    for action in parser._actions:
        for option in action.option_strings:
            actions[option[2:]] = action
    return actions


def beam_flags() -> set[str]:
    """Flags of every PipelineOptions class that is not ours."""
    parser = argparse.ArgumentParser(add_help=False)
    todo, seen = [PipelineOptions], set()
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            todo.append(sub)
            if sub.__module__.startswith("apache_beam"):
                try:
                    sub._add_argparse_args(parser)
                except argparse.ArgumentError:
                    pass
    return {option[2:] for a in parser._actions for option in a.option_strings if option.startswith("--")}


def committed_metadata(name: str) -> dict:
    return json.loads((TEMPLATES / name / "metadata.json").read_text(encoding="utf-8"))


def params(name: str) -> dict[str, dict]:
    return {p["name"]: p for p in committed_metadata(name)["parameters"]}


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_metadata_parameters_are_exactly_the_pipeline_flags(name):
    flags = set(pipeline_actions(name))
    names = [p["name"] for p in committed_metadata(name)["parameters"]]
    assert len(names) == len(set(names)), "duplicate parameters"
    assert set(names) - flags == set(), "parameters the pipeline does not declare"
    assert flags - set(names) == set(), "pipeline flags missing from metadata.json"


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_no_beam_flag_is_redeclared(name):
    assert set(params(name)) & beam_flags() == set()
    assert {"runner", "temp_location", "project", "streaming"} <= beam_flags()  # the oracle sees Beam's flags


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_only_the_required_flags_are_mandatory(name):
    mandatory = {n for n, p in params(name).items() if p["isOptional"] is False}
    assert mandatory == REQUIRED[name]
    argparse_required = {n for n, a in pipeline_actions(name).items() if a.required}
    assert argparse_required <= mandatory


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_every_parameter_is_documented(name):
    for n, p in params(name).items():
        assert p["label"].strip() and p["helpText"].strip(), n
        assert isinstance(p["isOptional"], bool), n
        if p["isOptional"]:
            assert "Default" in p["helpText"], f"{n}: helpText must state the default"
        else:
            assert "Required" in p["helpText"], n


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_streaming_flag_of_the_template(name):
    assert committed_metadata(name)["streaming"] is STREAMING[name]


def _accepts(regexes: list[str], text: str) -> bool:
    return all(re.search(r, text) for r in regexes)


def _type_accepts(type_fn, text: str) -> bool:
    try:
        type_fn(text)
    except (ValueError, argparse.ArgumentTypeError):
        return False
    return True


SAMPLES = ["1", "30", "2.5", ".5", "0", "0.0", "-3", "abc", "", "1e3", "12x", "inf", "nan"]


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_regexes_agree_with_the_flag_types(name):
    actions = pipeline_actions(name)
    checked = 0
    for n, p in params(name).items():
        action = actions[n]
        if action.choices:
            assert all(_accepts(p["regexes"], str(c)) for c in action.choices), n
            assert not _accepts(p["regexes"], "not-a-choice"), n
            checked += 1
        elif getattr(action.type, "__name__", None) in ("positive_int", "positive_float"):
            assert _accepts(p["regexes"], str(action.default)), n
            for sample in SAMPLES:
                if sample == "1e3":
                    continue  # float() takes exponents; the template does not need them
                assert _accepts(p["regexes"], sample) == _type_accepts(action.type, sample), (n, sample)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("sample", [
    "projects/my-project/subscriptions/events-sub", "projects/p/subscriptions/s",
    "projects/p/topics/t", "my-sub", "projects//subscriptions/s", "projects/p/subscriptions/s/x",
])
def test_subscription_regex_agrees_with_the_flag_type(sample):
    assert _accepts(params("streaming")["subscription"]["regexes"], sample) == _type_accepts(subscription_path, sample)


@pytest.mark.parametrize("flag", ["input", "model", "id_key_file", "suppression_list"])
def test_paths_must_be_on_gcs(flag):
    regexes = params("batch")[flag]["regexes"]
    assert _accepts(regexes, "gs://my-bucket/events/2024-*.avro")
    assert not _accepts(regexes, "/home/me/events.jsonl")
    assert not _accepts(regexes, "gs://my-bucket")


def test_boolean_and_choice_regexes():
    assert _accepts(params("batch")["demo_key"]["regexes"], "false")
    assert not _accepts(params("batch")["demo_key"]["regexes"], "yes")
    assert params("batch")["warehouse"]["regexes"] == ["^(local|bigquery)$"]


# ----------------------------------------------------------------------------- generated files


@pytest.mark.parametrize("spec_index", [0, 1])
def test_committed_metadata_equals_generator_output(generate, spec_index):
    spec = generate.SPECS[spec_index]
    committed = (TEMPLATES / spec.name / "metadata.json").read_text(encoding="utf-8")
    assert committed == generate.metadata_text(spec), "run: python templates/generate.py"


def test_check_mode_reports_nothing_stale(generate, capsys):
    assert generate.main(["--check"]) == 0
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- Dockerfile


def _dockerfile() -> str:
    return (TEMPLATES / "Dockerfile").read_text(encoding="utf-8")


def _env(text: str, key: str) -> str:
    match = re.search(rf"\b{key}=(\S+)", text)
    assert match, key
    return match.group(1)


def test_dockerfile_is_a_launcher_and_sdk_image_of_the_chosen_pipeline():
    text = _dockerfile()
    assert "ARG LAUNCHER_BASE=gcr.io/dataflow-templates-base/python311-template-launcher-base:" in text
    assert "FROM ${LAUNCHER_BASE}" in text
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in text
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    assert _env(text, "FLEX_TEMPLATE_PYTHON_PY_FILE") == "/template/main.py"
    assert "COPY templates/template_args.py templates/main.py /template/" in text
    assert _env(text, "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE") == "/template/requirements.txt"
    assert "COPY locks/base.txt /template/requirements.txt" in text
    assert "ARG PIPELINE=batch" in text and _env(text, "SEGMENTS_PIPELINE") == "${PIPELINE}"


def test_the_image_leaves_the_local_tooling_out():
    text = _dockerfile()
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M)
    assert not [line for line in copied if "devtools" in line]
    ignore = (TEMPLATES / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore and not [line for line in ignore if "devtools" in line and line.startswith("!")]


def test_beam_sdk_image_matches_the_locked_beam():
    beam_version = re.search(r"^ARG BEAM_VERSION=(\S+)$", _dockerfile(), re.M).group(1)
    locked = re.search(r"^apache-beam==(\S+) ", (ROOT / "locks" / "base.txt").read_text(), re.M).group(1)
    assert beam_version == locked


def test_the_image_installs_the_workers_lock_with_hashes_and_builds_nothing_unlocked():
    text = _dockerfile()
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /template/requirements.txt" in text
    assert "--no-build-isolation /tmp/src" in text
    assert "!locks/base.txt" in (TEMPLATES / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()


# ----------------------------------------------------------------------------- launcher arguments


def test_template_argv_applies_defaults_booleans_and_sdk_image(template_args):
    argv = template_args.template_argv(
        ["--input=gs://b/e.avro", "--demo_key=false", "--runner=DataflowRunner"],
        {"warehouse": "bigquery"}, {"demo_key"}, environ={"SEGMENTS_SDK_CONTAINER_IMAGE": "img:1"})
    assert argv == ["--warehouse=bigquery", "--sdk_container_image=img:1", "--input=gs://b/e.avro",
                    "--runner=DataflowRunner"]
    argv = template_args.template_argv(["--warehouse=local", "--demo_key=TRUE", "--sdk_container_image=x"],
                                       {"warehouse": "bigquery"}, {"demo_key"}, environ={})
    assert argv == ["--warehouse=local", "--demo_key", "--sdk_container_image=x"]
    with pytest.raises(ValueError, match="demo_key"):
        template_args.template_argv(["--demo_key=yes"], {}, {"demo_key"}, environ={})


def test_template_argv_parses_with_the_pipeline_options(template_args):
    argv = template_args.template_argv(
        ["--input=gs://b/e.avro", "--demo_key=true", "--history_days=7"],
        {"warehouse": "bigquery"}, template_args.boolean_flags([SegmentsOptions, BatchOptions]), environ={})
    options = PipelineOptions(argv).view_as(BatchOptions)
    assert (options.warehouse, options.demo_key, options.history_days, options.input) == \
        ("bigquery", True, 7, ["gs://b/e.avro"])


@pytest.mark.parametrize("name", ["batch", "streaming"])
def test_template_defaults_are_stated_in_the_metadata(name):
    entry = _load(TEMPLATES / "main.py", "_templates_main")
    for flag, value in entry.TEMPLATE_DEFAULTS.items():
        assert f"Default in this template: {value}." in params(name)[flag]["helpText"]
        assert _accepts(params(name)[flag]["regexes"], value)


@pytest.mark.parametrize("name, options_class, flag", [
    ("batch", BatchOptions, "--input=gs://b/e.avro"),
    ("streaming", StreamingOptions, "--subscription=projects/p/subscriptions/s"),
])
def test_one_launcher_serves_both_pipelines(name, options_class, flag):
    launcher = _load(TEMPLATES / "main.py", "_templates_main")
    argv = launcher.pipeline_argv(name, [flag, "--demo_key=true"])
    options = PipelineOptions(argv).view_as(options_class)
    assert (options.warehouse, options.demo_key) == ("bigquery", True)
    with pytest.raises(SystemExit, match="SEGMENTS_PIPELINE must be one of batch, streaming"):
        launcher.main([], name="nope")
