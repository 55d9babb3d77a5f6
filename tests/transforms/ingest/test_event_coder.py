"""The packed forms of `Event` that cross the per-user grouping and the coder registry."""

from __future__ import annotations

import pickle

from apache_beam import coders

from transforms.ingest.event_coder import EventCoder, key_by_user, pack_event, unpack_event, unpack_for_user
from transforms.contracts.events import Event

USER = "9f" * 32  # a pseudonym's length
EVENT = Event(event_id="e-1", user_id=USER, event_type="purchase", timestamp_us=1_793_874_508_995_000,
              session_id="s-1", channel="web", device="mobile", product_id="p-1", category="shoes", value=89.9,
              currency="EUR", quantity=2, page=None, search_query=None, campaign="c", duration_s=1.5,
              consent_analytics=True, consent_personalization=False, source="events.jsonl:7")


def test_packed_event_round_trips():
    assert unpack_event(pack_event(EVENT)) == EVENT
    assert type(unpack_event(pack_event(EVENT))) is Event


def test_keyed_form_leaves_the_user_id_to_the_key():
    key, packed = key_by_user(EVENT)
    assert key == USER
    assert USER.encode() not in packed
    assert len(packed) + len(USER) <= len(pack_event(EVENT))  # the id is not stored twice
    assert pickle.loads(packed) == tuple(v for name, v in zip(Event._fields, EVENT) if name != "user_id")
    restored = unpack_for_user(key, packed)
    assert restored == EVENT and type(restored) is Event


def test_event_coder_is_registered():
    coder = coders.registry.get_coder(Event)
    assert isinstance(coder, EventCoder)
    assert coder.decode(coder.encode(EVENT)) == EVENT
