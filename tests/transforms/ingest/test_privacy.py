"""Privacy: the suppression list's format, and the key kept out of the pipeline graph."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import given, strategies as st

from models import DEFAULT_MODEL_DIR
from models.serving import serving_model
from pipelines.batch import BatchOptions, build_pipeline
from transforms.ingest.privacy import (DEMO_ID_KEY, ID_KEY_ENV, ApplyPrivacy, IdKeyRef, KeySource, MissingIdKey,
                                       SuppressionListError, append_to_suppression_list, check_id_key,
                                       format_user_id, id_key_reference, parse_user_ids, pseudonymise,
                                       read_suppression_list)

SECRET = b"k3y-0f-th1rty-tw0-bytes-or-more-0123456789"


# ----------------------------------------------------------------------------- suppression list


def test_bom_crlf_spaces_and_comments():
    data = "\ufeffalice\r\n  bob  \r\n\t\r\n# a comment\r\n   # an indented comment\ncarol\n".encode("utf-8")
    assert parse_user_ids(data) == ["alice", "bob", "carol"]


def test_ids_with_spaces_or_a_leading_hash_are_written_as_json_strings():
    data = '"#vip"\n" padded "\n"\\"quoted"\n"tab\\there"\nplain\n'.encode("utf-8")
    assert parse_user_ids(data) == ["#vip", " padded ", '"quoted', "tab\there", "plain"]


@pytest.mark.parametrize("data, message", [
    (b"alice\n\"unterminated\n", "line 2"),
    (b'"two" "strings"\n', "line 1"),
    (b'""\n', "an empty id"),
    (b"ok\n\xff\xfe\n", "line 2: not UTF-8"),
    (b'"42"x\n', "line 1"),
])
def test_malformed_lines_are_errors_with_their_line(data, message):
    with pytest.raises(SuppressionListError, match=message):
        parse_user_ids(data)


@given(st.lists(st.text(min_size=1, max_size=20), max_size=20))
def test_every_id_round_trips_through_its_line(ids):
    lines = "".join(format_user_id(user_id) + "\n" for user_id in ids).encode("utf-8")
    assert parse_user_ids(lines) == ids


def test_plain_ids_are_written_plainly():
    assert [format_user_id(i) for i in ("u-42", "a b", "#x", " y", "z\n")] == ["u-42", "a b", '"#x"', '" y"', '"z\\n"']


def test_append_adds_only_new_ids_and_keeps_the_file(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"\xef\xbb\xbf# erasures\nalice")  # a BOM, and no final newline
    assert append_to_suppression_list(str(path), ["alice", "#vip", "bob", "bob"]) == 2
    assert path.read_bytes() == b'\xef\xbb\xbf# erasures\nalice\n"#vip"\nbob\n'
    assert read_suppression_list(str(path)) == {"alice", "#vip", "bob"}
    assert append_to_suppression_list(str(tmp_path / "new.txt"), [" z "]) == 1
    assert (tmp_path / "new.txt").read_text() == '" z "\n'


def test_a_missing_list_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_suppression_list(str(tmp_path / "nope.txt"))


def test_the_privacy_step_suppresses_the_ids_the_list_names(tmp_path):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.contracts.events import Event

    path = tmp_path / "list.txt"
    path.write_bytes('\ufeffu1\n  u2  \n"#u3"\n" u4"\n'.encode("utf-8"))
    users = ["u1", "u2", "#u3", " u4", "u4", "u5"]
    events = [Event(event_id=f"e{i}", user_id=u, event_type="page_view", timestamp_us=0, consent_personalization=True)
              for i, u in enumerate(users)]
    with TestPipeline() as p:
        kept = (p | beam.Create(events) | ApplyPrivacy(DEMO_ID_KEY, str(path))).events
        assert_that(kept | beam.Map(lambda e: e.user_id),
                    equal_to([pseudonymise(DEMO_ID_KEY, "u4"), pseudonymise(DEMO_ID_KEY, "u5")]))


def test_each_event_kept_out_comes_with_its_reason(tmp_path):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.contracts.events import Event

    path = tmp_path / "list.txt"
    path.write_text("gone\n")
    # consent: granted, refused, missing (deny by default), granted but suppressed
    cases = [("u1", True), ("u2", False), ("u3", None), ("gone", True)]
    events = [Event(event_id=f"e{i}", user_id=u, event_type="page_view", timestamp_us=0, consent_personalization=c)
              for i, (u, c) in enumerate(cases)]
    with TestPipeline() as p:
        out = p | beam.Create(events) | ApplyPrivacy(DEMO_ID_KEY, str(path))
        assert_that(out.filtered, equal_to(["no_consent", "no_consent", "suppressed"]), label="Reasons")
        assert_that(out.events | beam.Map(lambda e: e.event_id), equal_to(["e0"]), label="Kept")


# ----------------------------------------------------------------------------- the key


def test_key_reference_order(monkeypatch, tmp_path):
    monkeypatch.delenv(ID_KEY_ENV, raising=False)
    key_file = tmp_path / "key"
    key_file.write_bytes(SECRET + b"\n")
    assert id_key_reference(str(key_file)) == IdKeyRef(KeySource.FILE, str(key_file))
    assert IdKeyRef(KeySource.FILE, str(key_file)).read() == SECRET
    with pytest.raises(MissingIdKey, match="no pseudonymisation key"):
        id_key_reference()
    assert id_key_reference(use_demo_key=True).read() == DEMO_ID_KEY
    monkeypatch.setenv(ID_KEY_ENV, " env-key ")
    assert id_key_reference() == IdKeyRef(KeySource.ENV, ID_KEY_ENV)
    assert id_key_reference().read() == b"env-key"
    ref = id_key_reference(key_secret="projects/p/secrets/s/versions/3")
    assert ref == IdKeyRef(KeySource.SECRET, "projects/p/secrets/s/versions/3")
    with pytest.raises(MissingIdKey, match="not both"):
        id_key_reference(str(key_file), "projects/p/secrets/s/versions/3")
    with pytest.raises(MissingIdKey, match="must be projects/"):
        id_key_reference(key_secret="my-secret")


def test_an_empty_or_missing_key_file_is_refused(tmp_path):
    (tmp_path / "empty").write_bytes(b" \n")
    with pytest.raises(MissingIdKey, match="is empty"):
        IdKeyRef(KeySource.FILE, str(tmp_path / "empty")).read()
    with pytest.raises(MissingIdKey, match="cannot read the key file"):
        IdKeyRef(KeySource.FILE, str(tmp_path / "none")).read()


@pytest.mark.parametrize("ref, key, message", [
    (IdKeyRef(KeySource.DEMO), DEMO_ID_KEY, "demo key"),
    (IdKeyRef(KeySource.FILE, "gs://b/k"), DEMO_ID_KEY, "demo key"),
    (IdKeyRef(KeySource.FILE, "gs://b/k"), b"x", "1-byte key"),
    (IdKeyRef(KeySource.FILE, "gs://b/k"), b"x" * 31, "31-byte key"),
    (IdKeyRef(KeySource.ENV, ID_KEY_ENV), SECRET, "only seen on this machine"),
])
def test_jobs_off_this_machine_refuse_weak_or_invisible_keys(ref, key, message):
    with pytest.raises(MissingIdKey, match=message):
        check_id_key(ref, key, off_this_machine=True)
    check_id_key(ref, key, off_this_machine=False)  # a local run may


def test_a_key_of_32_bytes_is_accepted_off_this_machine():
    check_id_key(IdKeyRef(KeySource.SECRET, "projects/p/secrets/s/versions/1"), b"x" * 32, off_this_machine=True)


def test_pseudonymise_reads_a_reference(tmp_path):
    (tmp_path / "key").write_bytes(SECRET)
    expected = hmac.new(SECRET, "alice".encode(), hashlib.sha256).hexdigest()
    assert pseudonymise(IdKeyRef(KeySource.FILE, str(tmp_path / "key")), "alice") == expected


def test_the_pipeline_graph_holds_the_reference_not_the_key(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(SECRET)
    events = tmp_path / "events.jsonl"
    events.write_text("{}\n")
    options = PipelineOptions(["--input", str(events), "--id_key_file", str(key_file)])
    batch = options.view_as(BatchOptions)
    ref = batch.id_key_ref()
    assert ref == IdKeyRef(KeySource.FILE, str(key_file))
    p = beam.Pipeline(options=options)
    build_pipeline(p, batch, ref, serving_model(DEFAULT_MODEL_DIR))
    pickled = _pickled_dofns(p.to_runner_api())  # what a runner stages for its workers
    privacy = [blob for blob in pickled if b"_PrivacyFn" in blob]
    assert len(privacy) == 1 and str(key_file).encode() in privacy[0]
    assert not [blob for blob in pickled if SECRET in blob]
    assert SECRET not in pickle.dumps(ApplyPrivacy(ref))


def _pickled_dofns(proto) -> list[bytes]:
    """The uncompressed pickles of every ParDo's DoFn in a pipeline proto."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    blobs = []
    for transform in proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload
            packed = base64.b64decode(payload)  # Beam's pickler: bz2 (or zlib) under base64
            try:
                blobs.append(bz2.decompress(packed) if packed.startswith(b"BZh") else zlib.decompress(packed))
            except (OSError, zlib.error):  # not a pickled DoFn (a runner-native payload): checked raw
                blobs.append(payload)
    assert blobs
    return blobs
