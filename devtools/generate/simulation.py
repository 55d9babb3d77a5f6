"""Day-by-day simulation of a population: sessions, campaigns and refunds as contract v1 events."""

from __future__ import annotations

import bisect
import datetime as dt
import math
from typing import Iterator, Optional

import numpy as np

from devtools.generate.archetypes import (
    _CATEGORY_PRICE, _PRODUCTS_PER_CATEGORY, _SEARCH_WORDS, ARCHETYPE_NAMES, ARCHETYPES, CAMPAIGN_DAY_SHARE,
    CATEGORIES, CLICK_SESSION_SHARE, DAY_MS, EPOCH_MS_SHARE, HOUR_MS, HOUR_PROFILE, SESSION_CHANNELS,
    WEEKDAY_FACTOR, Archetype,
)
from devtools.generate.population import UserProfile, sample_population
from devtools.generate.randomness import _STREAM_CAMPAIGNS, _STREAM_DAY, _Draws
from devtools.generate.timestamps import _date_text

def _end_ms(end: dt.date) -> int:
    if isinstance(end, dt.datetime):
        if end.tzinfo is None:
            end = end.replace(tzinfo=dt.timezone.utc)
        return int(end.timestamp() * 1000)
    return (end - dt.date(1970, 1, 1)).days * DAY_MS


def _campaign_days(days: int, seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _STREAM_CAMPAIGNS])))
    return rng.random(days) < CAMPAIGN_DAY_SHARE


class _Simulator:
    """Day-by-day simulation of a population; yields (timestamp ms, event) in time order per day."""

    def __init__(self, population: list[UserProfile], days: int, end_ms: int, seed: int):
        self.pop = population
        self.days = days
        self.end_ms = end_ms
        self.start_ms = end_ms - days * DAY_MS
        self.seed = seed
        self.arch = [ARCHETYPES[u.archetype] for u in population]
        self.p_open = np.array([a.email_open for a in self.arch])
        self.pending_refunds: dict[int, list[tuple]] = {}
        self.buf: list[tuple[int, int, dict, Optional[UserProfile]]] = []
        self.emitted = 0  # events yielded so far; numbers the event ids
        self.r: _Draws

    # -- events -------------------------------------------------------------

    def _emit(self, user: UserProfile, event_type: str, ts: int, session_id: Optional[str], channel: str,
              device: str, props: Optional[dict]) -> None:
        if ts >= self.end_ms:
            return
        epoch_ms = self.r.u() < EPOCH_MS_SHARE
        # RFC 3339 strings are filled in per day, vectorised (`_stamp_day`).
        event = {"event_id": None, "user_id": user.user_id, "event_type": event_type,
                 "timestamp": ts if epoch_ms else None}
        if session_id is not None:
            event["session_id"] = session_id
        event["channel"] = channel
        event["device"] = device
        if props:
            event["properties"] = props
        if user.consent is not None:
            event["consent"] = dict(user.consent)
        self.buf.append((ts, len(self.buf), event, None if epoch_ms else user))

    def _category(self, user: UserProfile) -> str:
        return CATEGORIES[min(len(CATEGORIES) - 1, bisect.bisect_right(user.category_cdf, self.r.u()))]

    def _product(self, category: str) -> str:
        return f"p-{CATEGORIES.index(category):02d}{int(_PRODUCTS_PER_CATEGORY * self.r.u() ** 3):03d}"

    def _quantity(self) -> int:
        u = self.r.u()
        return 1 if u < 0.8 else (2 if u < 0.95 else 3)

    def _unit_price(self, arch: Archetype, category: str) -> float:
        return max(0.5, arch.value_median * _CATEGORY_PRICE[category] * math.exp(arch.value_sigma * self.r.normal()))

    def _purchase(self, user: UserProfile, arch: Archetype, ts: int, session_id: str, channel: str, device: str,
                  product: str, category: str, quantity: int, unit_price: float) -> None:
        value = round(unit_price * quantity, 2)
        self._emit(user, "purchase", ts, session_id, channel, device, {
            "product_id": product, "category": category, "value": value, "currency": user.currency,
            "quantity": quantity, "page": "/checkout/done"})
        if self.r.u() < arch.p_refund and ts < self.end_ms:
            refund_ts = ts + DAY_MS + int(self.r.u() * 9 * DAY_MS)
            day = (refund_ts - self.start_ms) // DAY_MS
            if day < self.days:
                self.pending_refunds.setdefault(day, []).append(
                    (refund_ts, user.index, product, category, value, quantity))

    def session(self, user: UserProfile, t: int, channel: Optional[str] = None) -> None:
        r = self.r
        arch = self.arch[user.index]
        if channel is None:
            channel = SESSION_CHANNELS[min(4, bisect.bisect_right(user.channel_cdf, r.u()))]
        session_id = f"s-{user.index}-{user.sessions:04d}"
        user.sessions += 1
        if channel == "store":
            category = self._category(user)
            quantity = self._quantity()
            self._purchase(user, arch, t, session_id, "store", "pos", self._product(category), category, quantity,
                           self._unit_price(arch, category))
            return
        device = user.app_device if channel == "app" else user.web_device
        if channel == "app":
            self._emit(user, "app_open", t, session_id, channel, device, None)
            t += r.gap_ms()
        for i in range(r.geometric(arch.page_views)):
            gap = r.gap_ms()
            if i == 0:
                page = "/"
            else:
                u = r.u()
                page = f"/c/{self._category(user)}" if u < 0.6 else ("/deals" if u < 0.8 else "/new")
            self._emit(user, "page_view", t, session_id, channel, device,
                       {"page": page, "duration_s": round(gap / 1000.0, 1)})
            t += gap
        if not user.signed_up:
            user.signed_up = True
            self._emit(user, "signup", t, session_id, channel, device, {"page": "/signup"})
            t += r.gap_ms()
        if r.u() < arch.p_search:
            category = self._category(user)
            words = _SEARCH_WORDS[category]
            query = words[int(r.u() * len(words))]
            if user.archetype == "bargain_hunter" and r.u() < 0.5:
                query = ("cheap " if r.u() < 0.5 else "sale ") + query
            self._emit(user, "search", t, session_id, channel, device, {"search_query": query, "page": "/search"})
            t += r.gap_ms()
        if r.u() >= arch.p_product_view:
            return
        cart: list[tuple[str, str, int, float]] = []
        for _ in range(r.geometric(arch.product_views)):
            category = self._category(user)
            product = self._product(category)
            self._emit(user, "product_view", t, session_id, channel, device,
                       {"product_id": product, "category": category, "page": f"/p/{product}"})
            t += r.gap_ms()
            if r.u() < arch.p_social_share:
                self._emit(user, "social_share", t, session_id, "social", device,
                           {"product_id": product, "category": category, "page": f"/p/{product}"})
                t += r.gap_ms()
            if r.u() < arch.p_add_to_cart:
                quantity = self._quantity()
                cart.append((product, category, quantity, self._unit_price(arch, category)))
                self._emit(user, "add_to_cart", t, session_id, channel, device,
                           {"product_id": product, "category": category, "quantity": quantity, "page": "/cart"})
                t += r.gap_ms()
        if cart and r.u() < arch.p_remove_from_cart:
            product, category, quantity, _ = cart.pop(int(r.u() * len(cart)))
            self._emit(user, "remove_from_cart", t, session_id, channel, device,
                       {"product_id": product, "category": category, "quantity": quantity, "page": "/cart"})
            t += r.gap_ms()
        if not cart or r.u() >= arch.p_checkout:
            return
        self._emit(user, "checkout_start", t, session_id, channel, device, {"page": "/checkout"})
        t += r.gap_ms() + r.gap_ms()
        if r.u() >= arch.p_purchase:
            return
        for product, category, quantity, unit_price in cart:
            self._purchase(user, arch, t, session_id, channel, device, product, category, quantity, unit_price)
            t += 50

    # -- days ---------------------------------------------------------------

    def run(self) -> Iterator[tuple[int, dict]]:
        users = len(self.pop)
        arch_index = np.array([ARCHETYPE_NAMES.index(u.archetype) for u in self.pop])
        base_rate = np.array([ARCHETYPES[u.archetype].sessions_per_day * u.activity for u in self.pop])
        weekend = np.array([ARCHETYPES[n].weekend_boost for n in ARCHETYPE_NAMES])[arch_index]
        active_from = np.array([u.active_from_day for u in self.pop])
        active_until = np.array([u.active_until_day for u in self.pop])
        tz_ms = np.array([u.tz_offset_min for u in self.pop], dtype=np.int64) * 60_000
        campaign_days = _campaign_days(self.days, self.seed)
        epoch_day0 = self.start_ms // DAY_MS

        for d in range(self.days):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _STREAM_DAY, d])))
            self.r = _Draws(rng)
            self.buf = []
            day_start = self.start_ms + d * DAY_MS
            weekday = (epoch_day0 + d + 3) % 7  # 1970-01-01 was a Thursday
            active = (active_from <= d) & (d < active_until)
            rate = base_rate * WEEKDAY_FACTOR[weekday] * (weekend if weekday >= 5 else 1.0) * active
            n_sessions = rng.poisson(rate)
            who = np.repeat(np.arange(users), n_sessions)
            hours = rng.choice(24, size=who.size, p=HOUR_PROFILE)
            local_ms = hours * HOUR_MS + rng.integers(0, HOUR_MS, size=who.size)
            starts = day_start + (local_ms - tz_ms[who]) % DAY_MS
            order = np.argsort(starts, kind="stable")  # so a new visitor's first session is its earliest
            for u, t in zip(who[order].tolist(), starts[order].tolist()):
                self.session(self.pop[u], t)

            if campaign_days[d]:
                self._campaign(rng, d, day_start, active)

            for refund_ts, u, product, category, value, quantity in self.pending_refunds.pop(d, ()):
                user = self.pop[u]
                if active[u]:
                    self._emit(user, "refund", refund_ts, None, "web", user.web_device, {
                        "product_id": product, "category": category, "value": value, "currency": user.currency,
                        "quantity": quantity})

            self.buf.sort()  # by (time, emission order): unique, so events are never compared
            _stamp_day(self.buf)
            prefix = f"e-{self.seed}-"
            for n, (ts, _, event, _) in enumerate(self.buf, start=self.emitted):
                event["event_id"] = f"{prefix}{n:09d}"
                yield ts, event
            self.emitted += len(self.buf)

    def _campaign(self, rng: np.random.Generator, d: int, day_start: int, active: np.ndarray) -> None:
        campaign = "cmp-" + _date_text(day_start // DAY_MS).replace("-", "")
        send = day_start + 8 * HOUR_MS + int(rng.integers(0, HOUR_MS))
        signed_up = np.array([u.signed_up for u in self.pop])
        eligible = active & signed_up
        opened = eligible & (rng.random(len(self.pop)) < self.p_open)
        for u in np.flatnonzero(opened).tolist():
            user = self.pop[u]
            r = self.r
            device = user.app_device if r.u() < 0.5 else user.web_device
            t = send + min(15 * HOUR_MS, int(-3 * HOUR_MS * math.log(1.0 - r.u())))
            self._emit(user, "email_open", t, None, "email", device, {"campaign": campaign})
            if r.u() < self.arch[u].email_click:
                t += 5000 + int(-120_000 * math.log(1.0 - r.u()))
                self._emit(user, "email_click", t, None, "email", device,
                           {"campaign": campaign, "page": f"/promo/{campaign}"})
                if r.u() < CLICK_SESSION_SHARE:
                    self.session(user, t + 3000 + int(r.u() * 20_000), "web")


def _stamp_day(buf: list[tuple[int, int, dict, Optional[UserProfile]]]) -> None:
    """Sets the RFC 3339 timestamps of a day's events (those with a user in slot 3)."""
    stringy = [item for item in buf if item[3] is not None]
    if not stringy:
        return
    local_ms = np.array([ts + user.stamp_offset_ms for ts, _, _, user in stringy], dtype=np.int64)
    texts = np.datetime_as_string(local_ms.astype("datetime64[ms]"), unit="ms").tolist()
    for (_, _, event, user), text in zip(stringy, texts):
        event["timestamp"] = text + user.stamp_suffix


def _iter_timed(population: list[UserProfile], days: int, end: dt.date, seed: int) -> Iterator[tuple[int, dict]]:
    """Valid events with their time in ms, in output order, ids assigned."""
    return _Simulator(population, days, _end_ms(end), seed).run()


def iter_events(users: int, days: int, end: dt.date, seed: int, *,
                population: Optional[list[UserProfile]] = None) -> Iterator[dict]:
    """The valid events of a simulation, as contract v1 JSON objects, in output order.

    Args:
      users: number of users (ignored when `population` is given).
      days: length of the period in days.
      end: end of the period, exclusive (a date means 00:00 UTC of that date).
      seed: random seed.
      population: users from `sample_population(users, days, seed)`; drawn if None.
        The simulation updates their session counters, so pass a fresh one.

    Yields:
      Event dicts, ordered by time within each day (sessions that run past
      midnight stay with the day they started on).
    """
    if population is None:
        population = sample_population(users, days, seed)
    for _, event in _iter_timed(population, days, end, seed):
        yield event

