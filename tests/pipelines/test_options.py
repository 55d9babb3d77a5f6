"""Pipeline options: each flag declared once; bad values refused by argparse."""

from __future__ import annotations

import argparse
import gc

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.batch import BatchOptions
from pipelines.options import SegmentsOptions, declare_flags, unknown_pipeline_args
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
