"""Day-by-day simulation of a population's lives as contract v1 events.

The lifecycle (`lifecycle`) fixes when each user arrives, orders and leaves; this
module fills those lives with events, one UTC day at a time, in time order:

* the acquisition visit: a browsing session with the user's `signup`;
* browsing sessions: Poisson per day alive, with rate = archetype
  `browse_sessions_per_day` x the user's activity x a weekday factor (weekends
  further x `weekend_boost`), starting at a local hour drawn from the archetype's
  daily rhythm; they walk the funnel `app_open` (app channel) -> `page_view`s ->
  `search`? -> `product_view`s (`social_share`?) -> `add_to_cart`? ->
  `remove_from_cart`? -> `checkout_start`?, and never complete a purchase
  (started checkouts are abandoned);
* orders: one checkout session per order of the lifecycle, ending at the order
  time: `page_view`s -> `search`? -> `product_view`s -> one `add_to_cart` per cart
  line -> `checkout_start` -> one `purchase` per line, all lines with the same
  timestamp and `properties.order_id` ("o-<user>-<n>"). Some orders start from a
  campaign e-mail (`email_open`, `email_click` just before); store orders are the
  purchase lines alone (channel "store", device "pos");
* campaigns (about 30 % of days): each user alive that day may open
  (`email_open`; sent at 08:00-09:00 local time, opened later that day at a time
  drawn from the user's daily rhythm) and click (`email_click`) the campaign
  e-mail; a click often leads into a browsing web session;
* refunds of order lines, rarely, 1-10 days after the order.

No event of a user comes before its acquisition or after its dropout (events of a
session that would run past either are left out), nor at or after the period end.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from typing import Iterator, Optional

import numpy as np

from devtools.generate.incidents import RETRIES, Incident
from devtools.generate.archetypes import (
    _CATEGORY_PRICE, _MAX_ORDER_LINES, _PRODUCTS_PER_CATEGORY, _SEARCH_WORDS, ARCHETYPE_NAMES, ARCHETYPES,
    CAMPAIGN_DAY_SHARE, CATEGORIES, CLICK_SESSION_SHARE, DAY_MS, EPOCH_MS_SHARE, HOUR_MS, MINUTE_MS,
    SESSION_CHANNELS, WEEKDAY_FACTOR, Archetype,
)
from devtools.generate.population import UserProfile, sample_population
from devtools.generate.randomness import _STREAM_CAMPAIGNS, _STREAM_DAY, _Draws, local_time_ms, stream
from devtools.generate.timestamps import _date_text

# A cart line waiting in an order or a browsing session: (product, category, quantity, unit price).
_Line = tuple[str, str, int, float]
# Kinds of a day's session starts, in the order they run when two start at the same ms.
_ACQUISITION, _BROWSE, _ORDER = 0, 1, 2
_FAR = 1 << 62  # a time limit that never binds


def end_ms(end: dt.date) -> int:
    """Epoch ms of `end` (a date means 00:00 UTC of that date)."""
    if isinstance(end, dt.datetime):
        if end.tzinfo is None:
            end = end.replace(tzinfo=dt.timezone.utc)
        return int(end.timestamp() * 1000)
    return (end - dt.date(1970, 1, 1)).days * DAY_MS


def campaign_days(days: int, seed: int) -> np.ndarray:
    """Which days of the period have an e-mail campaign (True) (`CAMPAIGN_DAY_SHARE` of them)."""
    return stream(seed, _STREAM_CAMPAIGNS).random(days) < CAMPAIGN_DAY_SHARE


class _Simulator:
    """Day-by-day simulation of a population; yields (timestamp ms, event) in time order per day."""

    def __init__(self, population: list[UserProfile], days: int, end_ms_: int, seed: int,
                 incident: Optional[Incident] = None):
        self.pop = population
        self.incident = incident
        self.affected = None if incident is None else incident.affected(len(population), seed)
        self.failed_checkouts = 0  # orders the incident turned into failed checkouts
        self.days = days
        self.end_ms = end_ms_
        self.start_ms = end_ms_ - days * DAY_MS
        self.seed = seed
        self.arch = [ARCHETYPES[u.archetype] for u in population]
        start = self.start_ms
        # Events of user i must fall in [first_ms[i], last_ms[i]].
        self.first_ms = [start + u.acquired_ms for u in population]
        self.last_ms = [start + u.dropped_out_ms if u.dropped_out_ms is not None else end_ms_ - 1
                        for u in population]
        self.pending_refunds: dict[int, list[tuple]] = {}
        self.buf: list[tuple[int, int, dict, Optional[UserProfile]]] = []
        self.emitted = 0  # events yielded so far; numbers the event ids
        self.campaign_of_day: list[Optional[str]] = []
        self.r: _Draws

    # -- events -------------------------------------------------------------

    def _emit(self, user: UserProfile, event_type: str, ts: int, session_id: Optional[str], channel: str,
              device: str, props: Optional[dict]) -> None:
        i = user.index
        if ts < self.first_ms[i] or ts > self.last_ms[i] or ts >= self.end_ms:
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

    def _line(self, user: UserProfile, arch: Archetype) -> _Line:
        category = self._category(user)
        return self._product(category), category, self._quantity(), self._unit_price(arch, category)

    def _session_id(self, user: UserProfile) -> str:
        session_id = f"s-{user.index}-{user.sessions:04d}"
        user.sessions += 1
        return session_id

    def _channel(self, user: UserProfile) -> str:
        return SESSION_CHANNELS[min(len(SESSION_CHANNELS) - 1, bisect.bisect_right(user.channel_cdf, self.r.u()))]

    def _purchase(self, user: UserProfile, arch: Archetype, ts: int, session_id: str, channel: str, device: str,
                  line: _Line, order_id: str) -> None:
        product, category, quantity, unit_price = line
        value = round(unit_price * quantity, 2)
        self._emit(user, "purchase", ts, session_id, channel, device, {
            "product_id": product, "category": category, "value": value, "currency": user.currency,
            "quantity": quantity, "page": "/checkout/done", "order_id": order_id})
        if self.r.u() < arch.p_refund:
            refund_ts = ts + DAY_MS + int(self.r.u() * 9 * DAY_MS)
            day = (refund_ts - self.start_ms) // DAY_MS
            if day < self.days:
                self.pending_refunds.setdefault(day, []).append(
                    (refund_ts, user.index, product, category, value, quantity, order_id))

    def _page_views(self, user: UserProfile, arch: Archetype, t: int, session_id: str, channel: str,
                    device: str) -> int:
        r = self.r
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
        return t

    def _search(self, user: UserProfile, arch: Archetype, t: int, session_id: str, channel: str,
                device: str) -> int:
        r = self.r
        if r.u() >= arch.p_search:
            return t
        category = self._category(user)
        words = _SEARCH_WORDS[category]
        query = words[int(r.u() * len(words))]
        if user.archetype == "bargain_hunter" and r.u() < 0.5:
            query = ("cheap " if r.u() < 0.5 else "sale ") + query
        self._emit(user, "search", t, session_id, channel, device, {"search_query": query, "page": "/search"})
        return t + r.gap_ms()

    def _view(self, user: UserProfile, arch: Archetype, t: int, session_id: str, channel: str, device: str,
              product: str, category: str) -> int:
        r = self.r
        self._emit(user, "product_view", t, session_id, channel, device,
                   {"product_id": product, "category": category, "page": f"/p/{product}"})
        t += r.gap_ms()
        if r.u() < arch.p_social_share:
            self._emit(user, "social_share", t, session_id, "social", device,
                       {"product_id": product, "category": category, "page": f"/p/{product}"})
            t += r.gap_ms()
        return t

    def _add_to_cart(self, user: UserProfile, t: int, session_id: str, channel: str, device: str,
                     line: _Line) -> int:
        product, category, quantity, _ = line
        self._emit(user, "add_to_cart", t, session_id, channel, device,
                   {"product_id": product, "category": category, "quantity": quantity, "page": "/cart"})
        return t + self.r.gap_ms()

    def browse(self, user: UserProfile, t: int, channel: Optional[str] = None, signup: bool = False) -> None:
        """A session without a completed purchase (a started checkout is abandoned)."""
        r = self.r
        arch = self.arch[user.index]
        if channel is None:
            channel = self._channel(user)
        session_id = self._session_id(user)
        device = user.app_device if channel == "app" else user.web_device
        if channel == "app":
            self._emit(user, "app_open", t, session_id, channel, device, None)
            t += r.gap_ms()
        t = self._page_views(user, arch, t, session_id, channel, device)
        if signup:
            self._emit(user, "signup", t, session_id, channel, device, {"page": "/signup"})
            t += r.gap_ms()
        t = self._search(user, arch, t, session_id, channel, device)
        if r.u() >= arch.p_product_view:
            return
        cart: list[_Line] = []
        for _ in range(r.geometric(arch.product_views)):
            line = self._line(user, arch)
            t = self._view(user, arch, t, session_id, channel, device, line[0], line[1])
            if r.u() < arch.p_add_to_cart:
                cart.append(line)
                t = self._add_to_cart(user, t, session_id, channel, device, line)
        if cart and r.u() < arch.p_remove_from_cart:
            product, category, quantity, _ = cart.pop(int(r.u() * len(cart)))
            self._emit(user, "remove_from_cart", t, session_id, channel, device,
                       {"product_id": product, "category": category, "quantity": quantity, "page": "/cart"})
            t += r.gap_ms()
        if cart and r.u() < arch.p_checkout:
            self._emit(user, "checkout_start", t, session_id, channel, device, {"page": "/checkout"})

    def order(self, user: UserProfile, order_ts: int, day: int) -> None:
        """One order: a checkout session whose purchase lines all carry `order_ts` and one order id.

        The session up to `checkout_start` is laid out first and then shifted so that
        it ends just before the order time (the lifecycle's; a dropout happens right
        at it); the purchase lines come at the order time.
        """
        r = self.r
        i = user.index
        arch = self.arch[i]
        mark = len(self.buf)
        order_id = f"o-{i}-{user.orders:04d}"
        user.orders += 1
        session_id = self._session_id(user)
        lines = [self._line(user, arch) for _ in range(min(_MAX_ORDER_LINES, r.geometric(arch.order_lines)))]
        if r.u() < arch.store_share:
            channel, device = "store", "pos"
        else:
            via_email = r.u() < arch.email_order_share
            channel = "web" if via_email else self._channel(user)
            device = user.app_device if channel == "app" else user.web_device
            # Laid out into a buffer of its own without the time limits, then shifted.
            outer, self.buf = self.buf, []
            limits = self.first_ms[i], self.last_ms[i], self.end_ms
            self.first_ms[i], self.last_ms[i], self.end_ms = -_FAR, _FAR, _FAR
            try:
                t = self._checkout_session(user, arch, order_ts, session_id, channel, device, lines, via_email, day)
                laid_out = self.buf
            finally:
                self.buf = outer
                self.first_ms[i], self.last_ms[i], self.end_ms = limits
            shift = order_ts - t
            first_ms, last_ms, end_ms_ = limits
            for ts, _, event, stamp_user in laid_out:
                ts += shift
                if first_ms <= ts <= last_ms and ts < end_ms_:
                    if stamp_user is None:
                        event["timestamp"] = ts
                    self.buf.append((ts, len(self.buf), event, stamp_user))
        for line in lines:
            self._purchase(user, arch, order_ts, session_id, channel, device, line, order_id)
        if (self.affected is not None and self.affected[i] and channel != "store"
                and self.incident.during(order_ts)):
            self._fail_order(mark, order_id, session_id, order_ts)

    def _fail_order(self, mark: int, order_id: str, session_id: str, order_ts: int) -> None:
        """The incident: the order's payment fails (`devtools.generate.incidents`). Its purchase
        lines (from `mark` on in the day's buffer) and pending refunds go, and the customer's
        `RETRIES` further checkout attempts come between the first one and the order's time."""
        laid_out = self.buf[mark:]
        checkouts = [item for item in laid_out
                     if item[2]["event_type"] == "checkout_start" and item[2].get("session_id") == session_id]
        kept = [item for item in laid_out if not (item[2]["event_type"] == "purchase"
                                                   and item[2]["properties"].get("order_id") == order_id)]
        if len(kept) == len(laid_out):  # nothing of the order was written (outside the user's life)
            return
        self.failed_checkouts += 1
        del self.buf[mark:]
        self.buf.extend(kept)
        for day, pending in self.pending_refunds.items():
            self.pending_refunds[day] = [refund for refund in pending if refund[6] != order_id]
        if checkouts:
            first_ts, _, first, stamp_user = checkouts[-1]
            for k in range(1, RETRIES + 1):
                ts = first_ts + (order_ts - first_ts) * k // RETRIES
                retry = dict(first, properties=dict(first.get("properties") or {}))
                if stamp_user is None:
                    retry["timestamp"] = ts
                self.buf.append((ts, len(self.buf), retry, stamp_user))

    def _checkout_session(self, user: UserProfile, arch: Archetype, t: int, session_id: str, channel: str,
                          device: str, lines: list[_Line], via_email: bool, day: int) -> int:
        """The events of an order's session up to `checkout_start`, from `t`; returns the order time."""
        r = self.r
        if via_email:
            campaign = self.campaign_of_day[day] or "cmp-welcome"
            self._emit(user, "email_open", t, None, "email", device, {"campaign": campaign})
            t += 5000 + int(-120_000 * math.log(1.0 - r.u()))
            self._emit(user, "email_click", t, None, "email", device,
                       {"campaign": campaign, "page": f"/promo/{campaign}"})
            t += 3000 + int(r.u() * 20_000)
        if channel == "app":
            self._emit(user, "app_open", t, session_id, channel, device, None)
            t += r.gap_ms()
        t = self._page_views(user, arch, t, session_id, channel, device)
        t = self._search(user, arch, t, session_id, channel, device)
        for _ in range(max(0, r.geometric(arch.product_views) - len(lines))):
            category = self._category(user)
            t = self._view(user, arch, t, session_id, channel, device, self._product(category), category)
        for line in lines:
            t = self._view(user, arch, t, session_id, channel, device, line[0], line[1])
            t = self._add_to_cart(user, t, session_id, channel, device, line)
        self._emit(user, "checkout_start", t, session_id, channel, device, {"page": "/checkout"})
        return t + r.gap_ms() + r.gap_ms()

    # -- days ---------------------------------------------------------------

    def run(self) -> Iterator[tuple[int, dict]]:
        users = len(self.pop)
        start = self.start_ms
        arch_index = np.array([u.arch_index for u in self.pop], dtype=np.int64)
        base_rate = np.array([self.arch[u.index].browse_sessions_per_day * u.activity for u in self.pop])
        weekend = np.array([ARCHETYPES[n].weekend_boost for n in ARCHETYPE_NAMES])[arch_index]
        p_open = np.array([a.email_open for a in self.arch])
        first = np.array(self.first_ms, dtype=np.int64)
        last = np.array(self.last_ms, dtype=np.int64)
        tz_ms = np.array([u.tz_offset_min for u in self.pop], dtype=np.int64) * MINUTE_MS
        campaigns = campaign_days(self.days, self.seed)
        latest: Optional[str] = None
        for d in range(self.days):
            if campaigns[d]:
                latest = "cmp-" + _date_text(start // DAY_MS + d).replace("-", "")
            self.campaign_of_day.append(latest)
        epoch_day0 = start // DAY_MS

        # The day (index) of each acquisition visit and each order.
        starts_by_day: dict[int, list[tuple[int, int, int]]] = {}
        for user in self.pop:
            t = self.first_ms[user.index]
            starts_by_day.setdefault((t - start) // DAY_MS, []).append((t, _ACQUISITION, user.index))
            for order_ms in user.orders_ms:
                t = start + order_ms
                starts_by_day.setdefault((t - start) // DAY_MS, []).append((t, _ORDER, user.index))

        for d in range(self.days):
            rng = stream(self.seed, _STREAM_DAY, d)
            self.r = _Draws(rng)
            self.buf = []
            day_start = start + d * DAY_MS
            day_end = day_start + DAY_MS
            weekday = (epoch_day0 + d + 3) % 7  # 1970-01-01 was a Thursday
            alive = (first < day_end) & (last >= day_start)
            rate = base_rate * WEEKDAY_FACTOR[weekday] * (weekend if weekday >= 5 else 1.0) * alive
            n_sessions = rng.poisson(rate)
            who = np.repeat(np.arange(users), n_sessions)
            local = local_time_ms(arch_index[who], rng.random(who.size), rng.random(who.size))
            times = day_start + (local - tz_ms[who]) % DAY_MS
            keep = (times > first[who]) & (times <= last[who])
            starts = starts_by_day.pop(d, [])
            starts.extend(zip(times[keep].tolist(), [_BROWSE] * int(keep.sum()), who[keep].tolist()))
            starts.sort()  # session numbers follow each user's time order
            for t, kind, u in starts:
                if kind == _BROWSE:
                    self.browse(self.pop[u], t)
                elif kind == _ORDER:
                    self.order(self.pop[u], t, d)
                else:
                    self.browse(self.pop[u], t, signup=True)

            if campaigns[d]:
                self._campaign(rng, d, day_start, alive, p_open, arch_index, tz_ms, first, last)

            for refund_ts, u, product, category, value, quantity, order_id in self.pending_refunds.pop(d, ()):
                user = self.pop[u]
                self._emit(user, "refund", refund_ts, None, "web", user.web_device, {
                    "product_id": product, "category": category, "value": value, "currency": user.currency,
                    "quantity": quantity, "order_id": order_id})

            # By (time, emission order), never comparing the events (a failed order's retries may share one).
            self.buf.sort(key=lambda item: item[:2])
            _stamp_day(self.buf)
            prefix = f"e-{self.seed}-"
            for n, (ts, _, event, _) in enumerate(self.buf, start=self.emitted):
                event["event_id"] = f"{prefix}{n:09d}"
                yield ts, event
            self.emitted += len(self.buf)

    def _campaign(self, rng: np.random.Generator, d: int, day_start: int, alive: np.ndarray, p_open: np.ndarray,
                  arch_index: np.ndarray, tz_ms: np.ndarray, first: np.ndarray, last: np.ndarray) -> None:
        campaign = self.campaign_of_day[d]
        users = len(self.pop)
        # Sent between 08:00 and 09:00 local time on the local date of this UTC day, opened
        # that day at a time drawn from the user's daily rhythm (right after the send if
        # that time comes before it: the morning check).
        local_day_start = day_start - tz_ms
        sent = 8 * HOUR_MS + (rng.random(users) * HOUR_MS).astype(np.int64)
        online = local_time_ms(arch_index, rng.random(users), rng.random(users))
        right_after = sent + np.minimum(HOUR_MS, rng.exponential(20 * MINUTE_MS, users).astype(np.int64))
        opened_at = local_day_start + np.where(online > sent, online, right_after)
        opened = alive & (rng.random(users) < p_open) & (opened_at >= first) & (opened_at <= last)
        for u in np.flatnonzero(opened).tolist():
            user = self.pop[u]
            r = self.r
            device = user.app_device if r.u() < 0.5 else user.web_device
            t = int(opened_at[u])
            self._emit(user, "email_open", t, None, "email", device, {"campaign": campaign})
            if r.u() < self.arch[u].email_click:
                t += 5000 + int(-120_000 * math.log(1.0 - r.u()))
                self._emit(user, "email_click", t, None, "email", device,
                           {"campaign": campaign, "page": f"/promo/{campaign}"})
                if r.u() < CLICK_SESSION_SHARE:
                    self.browse(user, t + 3000 + int(r.u() * 20_000), "web")


def _stamp_day(buf: list[tuple[int, int, dict, Optional[UserProfile]]]) -> None:
    """Sets the RFC 3339 timestamps of a day's events (those with a user in slot 3)."""
    stringy = [item for item in buf if item[3] is not None]
    if not stringy:
        return
    local_ms = np.array([ts + user.stamp_offset_ms for ts, _, _, user in stringy], dtype=np.int64)
    texts = np.datetime_as_string(local_ms.astype("datetime64[ms]"), unit="ms").tolist()
    for (_, _, event, user), text in zip(stringy, texts):
        event["timestamp"] = text + user.stamp_suffix


def iter_timed(population: list[UserProfile], days: int, end: dt.date, seed: int) -> Iterator[tuple[int, dict]]:
    """Valid events with their time in ms, in output order, ids assigned.

    Args:
      population: from `sample_population(..., holdout_days=h)` with `days + h == days` here.
      days: length of the whole simulated period (calibration plus hold-out days).
      end: end of the period, exclusive.
      seed: random seed.
    """
    return _Simulator(population, days, end_ms(end), seed).run()


def simulator(population: list[UserProfile], days: int, end: dt.date, seed: int,
              incident: Optional[Incident] = None) -> _Simulator:
    """As `iter_timed`, with an incident: ``.run()`` yields the events, ``.failed_checkouts`` counts after."""
    return _Simulator(population, days, end_ms(end), seed, incident)


def iter_events(users: int, days: int, end: dt.date, seed: int, *, holdout_days: int = 0,
                population: Optional[list[UserProfile]] = None) -> Iterator[dict]:
    """The valid events of a simulation, as contract v1 JSON objects, in output order.

    Args:
      users: number of users (ignored when `population` is given).
      days: length of the calibration period in days.
      end: end of the simulated period, exclusive (a date means 00:00 UTC of that date).
      seed: random seed.
      holdout_days: days simulated after the calibration period (the period is
        `days + holdout_days` long and ends at `end`).
      population: users from `sample_population(users, days, seed, holdout_days=...)`;
        drawn if None. The simulation updates their session and order counters, so
        pass a fresh one.

    Yields:
      Event dicts, ordered by time within each day (a session that runs past
      midnight stays with the day it started on; an order's session with the day of
      its order).
    """
    if population is None:
        population = sample_population(users, days, seed, holdout_days=holdout_days)
    for _, event in iter_timed(population, days + holdout_days, end, seed):
        yield event
