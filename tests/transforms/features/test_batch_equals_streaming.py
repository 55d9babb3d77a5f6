"""Batch and streaming profiles agree, on generated histories (hypothesis).

The streaming side is `UpdateProfileFn` itself, driven the way a runner drives it: its
`process`, flush and re-scoring callbacks called with in-memory state and timers
(`_StatefulRunner` below), so that hundreds of histories run in seconds. The same
histories through `TestStream` and the DirectRunner are in `test_compute.py`.

Each history is a few users over some days: sessions across midnight, events exactly at
00:00:00, orders whose lines span days, local times in several offsets, events arriving
out of order and late (within the allowed lateness, after the watermark passed their
day's midnight), redelivered duplicates, and sometimes a second burst of activity more
than 90 days later, so that the first days are folded away. For every user and every
midnight, the streaming job's last record as of that midnight equals the batch record,
field by field; a few fields are also checked against counts made here from the events
directly; and each update on events reads exactly the events delivered before it. The
silence after which a user is no longer scored varies too (730, 30, 2 and 1 days).
"""

from __future__ import annotations

import dataclasses
import math
import datetime as dt
import random
from typing import Optional

from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.contracts.events import Event
from transforms.features import snapshots, streaming_profiles
from transforms.features.activity import US_PER_DAY
from transforms.features.batch_profiles import ScoreUserHistory
from transforms.features.profile import ProfileRules, build_profile
from transforms.features.streaming_profiles import UpdateProfileFn
from transforms.ingest.dedupe import unique_events
from transforms.ingest.event_coder import key_by_user

US = 1_000_000
MINUTE = 60 * US
D0 = 20_000  # 2024-10-04
RULES = ProfileRules()
KINDS = ("page_view", "product_view", "search", "add_to_cart", "checkout_start", "purchase", "refund",
         "email_open", "email_click", "social_share")
OFFSETS = (-480, -300, 0, 60, 330, 540, 840)


# -- the streaming step, driven like a runner drives it ------------------------------------


class _Value:
    def __init__(self):
        self.value = None

    def read(self):
        return self.value

    def write(self, value):
        self.value = value

    def clear(self):
        self.value = None


class _Bag:
    def __init__(self):
        self.items: list = []

    def read(self):
        return list(self.items)

    def add(self, item):
        self.items.append(item)

    def clear(self):
        self.items = []


class _Timer:
    def __init__(self):
        self.at: Optional[int] = None

    def set(self, at: Timestamp):
        self.at = at.micros

    def clear(self):
        self.at = None


@dataclasses.dataclass
class _UserState:
    pending: _Bag = dataclasses.field(default_factory=_Bag)
    profile: _Value = dataclasses.field(default_factory=_Value)
    flush_set: _Value = dataclasses.field(default_factory=_Value)
    rescore_at: _Value = dataclasses.field(default_factory=_Value)
    flush: _Timer = dataclasses.field(default_factory=_Timer)
    rescore: _Timer = dataclasses.field(default_factory=_Timer)
    ready: _Value = dataclasses.field(default_factory=_Value)
    scored_through: _Value = dataclasses.field(default_factory=_Value)
    seeds_in: _Timer = dataclasses.field(default_factory=_Timer)


class _StatefulRunner:
    """Calls a `UpdateProfileFn`'s callbacks as a streaming runner would: elements, then the
    processing-time flushes, and event-time timers in time order as the watermark advances."""

    def __init__(self, fn: UpdateProfileFn):
        self.fn = fn
        fn.setup()
        self.users: dict[str, _UserState] = {}
        self.records: list[dict] = []
        self.too_late: list = []
        self.watermark_us = -(2 ** 62)

    def _collect(self, outputs) -> None:
        for out in outputs or ():
            if isinstance(out, TaggedOutput):
                if out.tag == "too_late":
                    self.too_late.append(out.value)
            else:
                self.records.append(out)

    def deliver(self, event: Event) -> None:
        self.deliver_keyed(*key_by_user(event))

    def deliver_keyed(self, key: str, packed: bytes) -> None:
        s = self.users.setdefault(key, _UserState())
        self._collect(self.fn.process((key, packed), pending=s.pending, flush_set=s.flush_set, rescore_at=s.rescore_at,
                                      flush=s.flush, rescore=s.rescore, profile_state=s.profile,
                                      scored_through=s.scored_through))

    def flush(self) -> None:
        for key, s in sorted(self.users.items()):
            if s.flush.at is not None:
                s.flush.clear()
                self._collect(self.fn.on_flush(key=key, pending=s.pending, profile_state=s.profile,
                                               flush_set=s.flush_set, ready=s.ready, seeds_in=s.seeds_in))

    def advance_watermark(self, to_us: int) -> None:
        self.watermark_us = max(self.watermark_us, to_us)
        while True:
            due = [(s.rescore.at, 1, key) for key, s in self.users.items()
                   if s.rescore.at is not None and s.rescore.at <= self.watermark_us]
            due += [(s.seeds_in.at, 0, key) for key, s in self.users.items()
                    if s.seeds_in.at is not None and s.seeds_in.at <= self.watermark_us]
            if not due:
                return
            at, which, key = min(due)
            s = self.users[key]
            if which == 0:
                s.seeds_in.clear()
                self._collect(self.fn.on_seeds_in(key=key, pending=s.pending, profile_state=s.profile,
                                                  flush_set=s.flush_set, ready=s.ready))
                continue
            s.rescore.clear()
            self._collect(self.fn.on_rescore(key=key, timestamp=Timestamp(micros=at), pending=s.pending,
                                             profile_state=s.profile, rescore_at=s.rescore_at, rescore=s.rescore,
                                             scored_through=s.scored_through))


def streaming_fn(max_silent: dt.timedelta = dt.timedelta(days=730)) -> UpdateProfileFn:
    return UpdateProfileFn(RULES, early_firing=dt.timedelta(seconds=60), rescore_every=dt.timedelta(days=1),
                           max_silent=max_silent)


# -- generated histories -------------------------------------------------------------------


@dataclasses.dataclass
class History:
    events: list[Event]  # unique events
    days: int  # midnights 1..days are scored
    arrivals: list[list[Event]]  # arrivals[d]: delivered after midnight d, before midnight d + 1
    flush_points: list[set[int]]  # positions within arrivals[d] after which the flushes fire
    max_silent: dt.timedelta = dt.timedelta(days=730)  # no record as of a midnight after this much silence


@st.composite
def histories(draw) -> History:
    rng = random.Random(draw(st.integers(0, 2 ** 32 - 1)))
    far = draw(st.booleans()) and draw(st.booleans())  # a quarter: a second era past the 90-day fold
    days = draw(st.integers(2, 6))
    eras = [0] + ([draw(st.integers(92, 100))] if far else [])
    events: list[Event] = []
    for u in range(draw(st.integers(1, 3))):
        user, offset, n = f"u{u}", rng.choice(OFFSETS), 0
        for era in eras:
            for _ in range(draw(st.integers(1, 4))):  # sessions (and session-less bursts)
                day = era + rng.randrange(days)
                start = rng.choice([0, US_PER_DAY - rng.randrange(1, 40) * MINUTE, rng.randrange(US_PER_DAY),
                                    US_PER_DAY - rng.randrange(1, 1000)])
                session = rng.choice([f"{user}-s{era}-{rng.randrange(3)}", None])
                t = day * US_PER_DAY + start
                for _ in range(rng.randint(1, 5)):
                    kind = rng.choice(KINDS)
                    money = kind in ("purchase", "refund")
                    events.append(Event(
                        f"{user}-{n}", user, kind, (D0 * US_PER_DAY) + t, session_id=session,
                        channel=rng.choice(["web", "app", "email", "social", "store", None]),
                        device=rng.choice(["desktop", "Mobile", "tablet", None]),
                        category=rng.choice(["shoes", "bags", "hats", None]),
                        value=round(rng.uniform(1, 90), 2) if money else None,
                        currency=rng.choice(["EUR", "USD", "GBP", None]) if money else None,
                        order_id=rng.choice([f"o{era}-{rng.randrange(2)}", None]) if kind == "purchase" else None,
                        utc_offset_min=offset, source=f"test:{user}:{n}"))
                    n += 1
                    t += rng.choice([0, 1, rng.randrange(1, 29) * MINUTE, rng.randrange(1, 40) * MINUTE,
                                     rng.randrange(1, 3) * 3600 * US])
    last_day = max(e.timestamp_us // US_PER_DAY for e in events) - D0
    days = last_day + 1 + draw(st.integers(0, 2))  # the midnight after the last event, and silent days after
    arrivals: list[list[Event]] = [[] for _ in range(days + 1)]
    for e in events + rng.sample(events, k=min(2, len(events))):  # and two redeliveries
        day = e.timestamp_us // US_PER_DAY - D0
        # on time: before the watermark passes the next midnight; early: before the
        # watermark passes its own day's midnight (the watermark lags, so the step may
        # apply it before scoring that midnight); late: after the next midnight, within
        # the allowed lateness (48 hours behind the latest midnight passed)
        late = rng.choice([-1, 0, 0, 0, 1, 2])
        arrivals[max(0, min(day + late, days))].append(e)
    for batch in arrivals:
        rng.shuffle(batch)
    flush_points = [set(rng.sample(range(len(b) + 1), k=min(2, len(b) + 1))) | {len(b)} for b in arrivals]
    max_silent = dt.timedelta(days=draw(st.sampled_from([730, 30, 2, 1])))
    return History(sorted(events, key=lambda e: e.timestamp_us), days, arrivals, flush_points, max_silent)


def stream(history: History) -> _StatefulRunner:
    runner = _StatefulRunner(streaming_fn(history.max_silent))
    runner.advance_watermark(D0 * US_PER_DAY)
    for day, (batch, points) in enumerate(zip(history.arrivals, history.flush_points)):
        for i in range(len(batch) + 1):
            if i in points:
                runner.flush()
                runner.advance_watermark(runner.watermark_us)  # timers set behind the watermark fire
            if i < len(batch):
                runner.deliver(batch[i])
        runner.advance_watermark((D0 + min(day + 1, history.days)) * US_PER_DAY)
    return runner


def batch(history: History) -> dict[tuple[str, int], dict]:
    fn = ScoreUserHistory(RULES, history_days=history.days - 1, max_silent=history.max_silent)
    fn.setup()
    as_of = (D0 + history.days) * US_PER_DAY
    records = {}
    by_user: dict[str, list[Event]] = {}
    for batch_ in history.arrivals:
        for e in batch_:
            by_user.setdefault(e.user_id, []).append(e)
    for user, events in by_user.items():
        packed = [key_by_user(e)[1] for e in events]
        for out in fn.process((user, packed), window=GlobalWindow(), as_of_us=as_of):
            records[(user, out.value["as_of_us"])] = out.value
    return records


def independent(events: list[Event], user: str, as_of_us: int) -> dict:
    """Counts made from the events before `as_of_us` directly: a session is cut at the gap
    and at midnight UTC; an order (order id, else session, else event) counts once."""
    mine = sorted((e for e in events if e.user_id == user and e.timestamp_us < as_of_us),
                  key=lambda e: e.timestamp_us)
    sessions, last_of = 0, {}
    for e in mine:
        if e.session_id:
            before = last_of.get(e.session_id)
            if (before is None or e.timestamp_us - before >= RULES.gap_us
                    or before // US_PER_DAY != e.timestamp_us // US_PER_DAY):
                sessions += 1
            last_of[e.session_id] = e.timestamp_us
    orders = {("o" + e.order_id) if e.order_id else ("s" + e.session_id) if e.session_id else e.event_id
              for e in mine if e.event_type == "purchase"}
    return {"event_count": len(mine), "first_seen_us": mine[0].timestamp_us, "last_event_us": mine[-1].timestamp_us,
            "lifetime_sessions": float(sessions), "orders": float(len(orders))}


def same(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for name in a:
        if isinstance(a[name], float):  # sums of money in another order may differ in the last bits
            assert math.isclose(a[name], b[name], rel_tol=1e-9, abs_tol=1e-9), f"{where}: {name}"
        else:
            assert a[name] == b[name], f"{where}: {name}"


def check(history: History) -> None:
    runner = stream(history)
    assert runner.too_late == []  # every late event is within the allowed lateness
    latest_daily: dict[tuple[str, int], dict] = {}
    for record in runner.records:
        if record["scoring"] == "daily":
            latest_daily[(record["user_key"], record["as_of_us"])] = record  # a correction replaces it
    batched = batch(history)
    assert set(latest_daily) == set(batched)
    for key, record in batched.items():
        same(latest_daily[key], record, f"daily {key}")
        counts = independent(history.events, *key)
        assert {name: record[name] for name in counts} == counts, key


def check_updates_on_events(history: History) -> None:
    """Each update on events reads exactly the events delivered before it (duplicates once)."""
    runner = _StatefulRunner(streaming_fn())
    delivered: dict[str, list[Event]] = {}
    for day, batch_ in enumerate(history.arrivals):
        runner.advance_watermark((D0 + day) * US_PER_DAY)
        for e in batch_:
            runner.deliver(e)
            delivered.setdefault(e.user_id, []).append(e)
        runner.records.clear()
        runner.flush()
        for record in runner.records:
            assert record["scoring"] == "event"
            user = record["user_key"]
            expected = RULES.snapshot(user, build_profile(RULES, unique_events(delivered[user])),
                                      record["as_of_us"], "event")
            same(record, expected, f"event {user}")
            assert record["as_of_us"] == max(e.timestamp_us for e in delivered[user]) + 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_streaming_gives_the_batch_record_of_every_user_and_midnight(history):
    check(history)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_an_update_on_events_reads_the_events_delivered_before_it(history):
    check_updates_on_events(history)


# -- starting from a snapshot ---------------------------------------------------------------


def batch_with_snapshot(events: list[Event], days: int, max_silent: dt.timedelta = dt.timedelta(days=730)
                        ) -> tuple[dict[tuple[str, int], dict], dict[str, bytes]]:
    """The batch records as of midnights 1..days of `events`, and each user's snapshot state
    as of midnight `days`, through its Avro record (`snapshots.snapshot_record` / `decode`)."""
    fn = ScoreUserHistory(RULES, history_days=days - 1, snapshot=True, max_silent=max_silent)
    fn.setup()
    as_of = (D0 + days) * US_PER_DAY
    records, seeds = {}, {}
    by_user: dict[str, list[Event]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    for user, mine in sorted(by_user.items()):
        for out in fn.process((user, [key_by_user(e)[1] for e in mine]), window=GlobalWindow(), as_of_us=as_of):
            if isinstance(out, TaggedOutput):
                key, profile = out.value
                record = snapshots.snapshot_record(key, profile, as_of)
                seeds[key] = snapshots.SEED_MARK + record["state"]
            else:
                records[(user, out.value["as_of_us"])] = out.value
    return records, seeds


def check_resume(history: History, split: int) -> None:
    """Batch over days before `split` with a snapshot, then streaming from it, gives the
    records of one batch run over every day, for every midnight after the split."""
    cut = (D0 + split) * US_PER_DAY
    first, seeds = batch_with_snapshot([e for e in history.events if e.timestamp_us < cut], split,
                                       history.max_silent)
    runner = _StatefulRunner(UpdateProfileFn(RULES, early_firing=dt.timedelta(seconds=60),
                                             rescore_every=dt.timedelta(days=1), max_silent=history.max_silent,
                                             seeded_as_of_us=cut))
    for user, seed in sorted(seeds.items()):
        runner.deliver_keyed(user, seed)
    seeded = {r["user_key"]: r for r in runner.records}
    # the seed record is where the batch left the user: their first change will be a real one
    assert set(seeded) == {user for user, as_of in first if as_of == cut} | {
        user for user in seeded if seeded[user]["days_since_last_event"] >= history.max_silent / dt.timedelta(days=1)}
    for user, record in seeded.items():
        assert record["scoring"] == streaming_profiles.SEED
        if (user, cut) in first:  # (a user silent too long has no batch record as of the cut)
            same({**record, "scoring": "daily"}, first[(user, cut)], f"seed {user}")
    runner.records.clear()
    # events at or after the cut that reached the old job before its watermark passed the
    # cut: the subscription, sought back to the cut, delivers them again
    for e in history.arrivals[split - 1]:
        if e.timestamp_us >= cut:
            runner.deliver(e)
    runner.advance_watermark(cut)
    for day in range(split, len(history.arrivals)):
        # the subscription's retained messages overlap the snapshot: duplicates, dropped
        for e in history.arrivals[day]:
            runner.deliver(e)
        runner.flush()
        runner.advance_watermark(runner.watermark_us)
        runner.advance_watermark((D0 + min(day + 1, history.days)) * US_PER_DAY)
    runner.flush()
    runner.advance_watermark(runner.watermark_us)
    assert runner.too_late == []
    resumed = {(r["user_key"], r["as_of_us"]): r for r in runner.records if r["scoring"] == "daily"}
    whole = {key: r for key, r in batch(history).items() if key[1] > cut}
    assert set(resumed) == set(whole)
    for key, record in whole.items():
        same(resumed[key], record, f"resumed {key}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.integers(1, 5))
def test_streaming_from_a_batch_snapshot_continues_the_batch_records(history, split):
    check_resume(history, min(split, history.days - 1))


def test_events_arriving_before_their_seed_wait_for_it():
    """The runner may deliver a user's events before the snapshot's read reaches them: the
    updates wait until the watermark passes the snapshot's midnight (all seeds in)."""
    early = [Event(f"e{i}", "u", kind, (D0 + day) * US_PER_DAY + 3600 * US, session_id=f"s{day}", source=f"t:{i}",
                   value=10.0 if kind == "purchase" else None)
             for i, (day, kind) in enumerate([(0, "purchase"), (1, "page_view"), (2, "purchase")])]
    cut = (D0 + 2) * US_PER_DAY
    _, seeds = batch_with_snapshot(early[:2], 2)
    runner = _StatefulRunner(UpdateProfileFn(RULES, early_firing=dt.timedelta(seconds=60),
                                             rescore_every=dt.timedelta(days=1), max_silent=dt.timedelta(days=730),
                                             seeded_as_of_us=cut))
    runner.advance_watermark(cut - 1)
    runner.deliver(early[2])
    runner.flush()
    assert runner.records == []  # held: the seed may still come
    runner.deliver_keyed("u", seeds["u"])
    assert [r["scoring"] for r in runner.records] == [streaming_profiles.SEED]
    runner.advance_watermark(cut)
    update = runner.records[-1]
    assert (update["scoring"], update["event_count"], update["orders"]) == ("event", 3, 2.0)
