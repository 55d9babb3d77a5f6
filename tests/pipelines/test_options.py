"""Pipeline options: each flag declared once; bad values refused by argparse."""

from __future__ import annotations

import argparse
import gc
import pathlib

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.batch import BatchOptions
from pipelines.flags import file_location
from pipelines.options import SegmentsOptions, check_inputs, declare_flags, unknown_pipeline_args
from pipelines.streaming import StreamingOptions
from pipelines.train import TrainOptions


def test_no_two_option_classes_declare_one_flag():
    # Raises argparse.ArgumentError on a clash; Beam's classes are included.
    assert unknown_pipeline_args(["--input", "x", "--runner", "DirectRunner", "--imput", "y"]) == ["--imput"]


def test_a_clash_is_an_error():
    class Clashing(SegmentsOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--run_id")

    with pytest.raises(argparse.ArgumentError, match="--run_id"):
        declare_flags(argparse.ArgumentParser(), Clashing)
    del Clashing
    gc.collect()  # PipelineOptions.__subclasses__() holds weak references: it is gone


@pytest.mark.parametrize("options_class, own", [
    (BatchOptions, {"--input", "--summary", "--as_of"}),
    (TrainOptions, {"--input", "--out", "--until", "--random_state"}),
    (StreamingOptions, {"--subscription", "--audit_interval_seconds"}),
])
def test_every_job_declares_the_shared_flags_and_its_own(options_class, own):
    parser = argparse.ArgumentParser()
    declare_flags(parser, options_class)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert own | {"--run_id", "--model", "--bq_endpoint", "--suppression_list", "--demo_key"} <= flags


def test_the_run_id_is_generated_per_mode_unless_given():
    assert PipelineOptions(["--run_id", "r1"]).view_as(BatchOptions).resolved_run_id("batch") == "r1"
    assert PipelineOptions([]).view_as(StreamingOptions).resolved_run_id("stream").startswith("stream-")


def _parse(*args):
    parser = argparse.ArgumentParser(exit_on_error=False)
    declare_flags(parser, BatchOptions)
    return parser.parse_args(list(args))


@pytest.mark.parametrize("flag, value", [
    ("--max_silent_days", "100000000"),  # 274,000 years: date arithmetic overflows
    ("--rescore_days", "0"),
    ("--history_days", "3651"),
    ("--history_days", "-1"),
    ("--session_gap_minutes", "inf"),
    ("--session_gap_minutes", "nan"),
    ("--allowed_lateness_hours", "-1"),
    ("--allowed_lateness_hours", "1e308"),
    ("--max_future_skew_hours", "Infinity"),
    ("--max_event_age_days", "36501"),
    ("--max_event_bytes", "104857601"),
    ("--early_firing_seconds", "86401"),
    ("--dead_letter_max_payload_bytes", "100"),
    ("--model_sha256", "abc"),
])
def test_out_of_range_values_are_refused_by_argparse(flag, value):
    with pytest.raises(argparse.ArgumentError, match=flag):
        _parse("--input", "x", flag, value)


@pytest.mark.parametrize("flag, value, parsed", [
    ("--max_silent_days", "3650", 3650),
    ("--history_days", "0", 0),
    ("--session_gap_minutes", "0.5", 0.5),
    ("--allowed_lateness_hours", "87600", 87600.0),
    ("--dead_letter_max_payload_bytes", "1024", 1024),
    ("--model_sha256", "AB" * 32, "ab" * 32),
])
def test_values_at_the_edges_are_accepted(flag, value, parsed):
    assert getattr(_parse("--input", "x", flag, value), flag[2:]) == parsed


def test_the_fallback_folder_follows_the_temp_location(tmp_path):
    import os

    local = PipelineOptions([]).view_as(BatchOptions)
    assert local.fallback_dir("batch-1") == os.path.abspath(os.path.join(".work", "fallback", "batch-1"))
    remote = PipelineOptions(["--temp_location", "gs://b/tmp"]).view_as(BatchOptions)
    assert remote.fallback_dir("run/2") == "gs://b/tmp/segments-fallback/run_2"
    given = PipelineOptions(["--dead_letter_fallback", str(tmp_path)]).view_as(BatchOptions)
    assert given.fallback_dir("r") == str(tmp_path / "r")


@pytest.mark.parametrize("args, message", [
    (["--runner", "DataflowRunner", "--demo_key"], "no pseudonymisation key for a DataflowRunner job"),
    (["--runner", "DataflowRunner", "--id_key_file", "{short}"], "2-byte key"),
    (["--id_key_file", "{empty}"], "is empty"),
])
def test_key_checks_happen_in_the_driver(tmp_path, monkeypatch, args, message):
    from transforms.ingest.privacy import ID_KEY_ENV, MissingIdKey

    monkeypatch.delenv(ID_KEY_ENV, raising=False)
    (tmp_path / "short").write_text("ab")
    (tmp_path / "empty").write_text("")
    args = [a.format(short=tmp_path / "short", empty=tmp_path / "empty") for a in args]
    with pytest.raises(MissingIdKey, match=message):
        PipelineOptions(args).view_as(BatchOptions).id_key_ref()


def test_relative_file_flags_are_resolved_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for name in ("a.jsonl", "b.jsonl", "c.avro"):
        (tmp_path / "data" / name).write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    options = PipelineOptions(["--input", "data/*.jsonl", "--input", "gs://bucket/e-*.avro", "--model", "m",
                               "--suppression_list", "~/erased.txt"]).view_as(BatchOptions)
    assert options.input == [str(tmp_path / "data" / "*.jsonl"), "gs://bucket/e-*.avro"]
    assert options.model == str(tmp_path / "m")
    assert options.suppression_list == str(pathlib.Path.home() / "erased.txt")
    assert check_inputs(options.input[:1]) == 2  # what Beam's filesystem matched: a.jsonl and b.jsonl
    assert file_location(options.input[0]) == options.input[0], "idempotent: workers parse the options again"


@pytest.mark.parametrize("flag", ["--out", "--holdout", "--truth", "--previous"])
def test_training_paths_are_resolved_too(tmp_path, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    value = getattr(PipelineOptions([flag, "x*.jsonl"]).view_as(TrainOptions), flag[2:])
    assert value in (str(tmp_path / "x*.jsonl"), [str(tmp_path / "x*.jsonl")])
