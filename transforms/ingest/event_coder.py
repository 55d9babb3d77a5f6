"""A compact, fast coder for `Event`, registered with Beam's coder registry on import.

Events cross a shuffle once in batch (the per-user grouping). Pickling the plain tuple
and rebuilding the `Event` with `_make` is cheaper than Beam's default for a NamedTuple
(`FastPrimitivesCoder`), and smaller: no class reference per element
(`benchmarks/RESULTS.md`). Not deterministic, like any pickle: fine for values,
so `Event` must not be used as a grouping key.

`pack_event` / `unpack_event` are the same encoding as functions. `key_by_user` /
`unpack_for_user` pack an event without its `user_id` for a grouping keyed by it
(`transforms.features.streaming_profiles`): the key already carries the 64-character pseudonym, a
large part of each packed event, and every grouped event is held in memory.
"""

from __future__ import annotations

import pickle

from apache_beam import coders

from transforms.contracts.events import Event


def pack_event(event: Event) -> bytes:
    """An `Event` as the pickled tuple of its fields (protocol 5)."""
    return pickle.dumps(tuple(event), protocol=5)


def unpack_event(packed: bytes) -> Event:
    """The inverse of `pack_event`."""
    return Event._make(pickle.loads(packed))


def key_by_user(event: Event) -> tuple[str, bytes]:
    """``(user_id, the event packed without its user_id)``; see `unpack_for_user`."""
    fields = tuple(event)
    return fields[1], pickle.dumps(fields[:1] + fields[2:], protocol=5)


def unpack_for_user(user_id: str, packed: bytes) -> Event:
    """The inverse of `key_by_user`: the event, its `user_id` restored from the key."""
    fields = pickle.loads(packed)
    return Event._make((fields[0], user_id) + fields[1:])


class EventCoder(coders.Coder):
    """`Event` <-> `pack_event` bytes."""

    def encode(self, event: Event) -> bytes:
        return pack_event(event)

    def decode(self, encoded: bytes) -> Event:
        return unpack_event(encoded)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return Event


coders.registry.register_coder(Event, EventCoder)
