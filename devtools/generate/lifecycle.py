"""How users arrive, buy and leave: acquisition, the BG/NBD purchase process, dropout.

All of it is drawn once per user, before any event is simulated (`simulation` then
fills the life with sessions). Rates are per day; each archetype's numbers are in
`archetypes.ARCHETYPES` (`PurchaseProcess`).

Arrival. Users arrive as a Poisson process of constant intensity over the first
`ACQUISITION_SHARE` (80 %) of the calibration period (`--days`), conditioned on
`--users` arrivals: each user's acquisition day is uniform over those days, and its
time of day follows the archetype's local daily rhythm. Nobody has history before
the period (no left censoring), and everyone is acquired before the calibration end,
so every user has activity in the calibration file. The acquisition is the user's
first visit, in which it signs up.

Purchases (BG/NBD after the first purchase; Fader, Hardie & Lee 2005, the process of
`models.bgnbd.simulate`). Each user draws a purchase rate lambda ~ Gamma(r_k,
rate alpha_k) and a dropout probability p ~ Beta(a_k, b_k). The first purchase comes
an Exponential(c_k) time after acquisition, c_k being the archetype's first-purchase
rate: the same for all its users, so that who becomes a buyer, and when, does not
depend on lambda. (With an Exponential(lambda) wait the buyers would be a sample
tilted towards high lambda, whose lambda is no longer Gamma(r_k, alpha_k): at 200,000
simulated users a BG/NBD fit then gave r = 1.74 for a true 0.8.) From the first
purchase on, purchases are a Poisson(lambda) process while the user is alive, and
after each repeat purchase (not the first) the user drops out with probability p.

Dropout. A dropped-out user stops all activity for good: no visit, no e-mail open or
click, no refund after it. A buyer drops out at the time of the order after which it
left (its last event). A user who has not bought yet leaves with the archetype's
constant hazard h_k per day: an Exponential(h_k) time after its first visit (2 hours
after acquisition); if that comes before its first purchase, it never buys.

Daily rhythm. The process runs in continuous time; each order is then given a time of
day drawn from the archetype's hour profile, on its local calendar day, so that
orders follow the user's evening-heavy rhythm. A user orders at most once per local
day: an order on a day that already has one moves to the next day, so that the
purchase days that BG/NBD counts (x = purchase days - 1) are the process's orders
(an order moved past the period end is dropped, and its user did not leave within
the period). An order is at least 2 hours after its user's acquisition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from devtools.generate.archetypes import (
    ACQUISITION_SHARE, ARCHETYPE_NAMES, ARCHETYPES, DAY_MS, MINUTE_MS,
)
from devtools.generate.randomness import _STREAM_LIFECYCLE, local_time_ms, stream

if TYPE_CHECKING:
    from devtools.generate.population import UserProfile

# Time given to the first visit: orders come at least this long after the acquisition (so
# that an order's checkout session, laid out backwards from the order time, starts after
# it), and a non-buyer's dropout clock starts after it.
FIRST_VISIT_MS = 2 * 60 * MINUTE_MS


def arrival_days(days: int) -> int:
    """Number of calibration days over which users arrive (the first 80 %, at least 1)."""
    return max(1, round(ACQUISITION_SHARE * days))


def draw_lifecycles(population: list["UserProfile"], days: int, holdout_days: int, seed: int) -> None:
    """Draws every user's acquisition, purchase rate, dropout probability, orders and dropout.

    Sets `purchase_rate`, `dropout_probability`, `acquired_ms`, `orders_ms` and
    `dropped_out_ms` of each user (ms after the period start).

    Args:
      population: the users (archetype and time zone already drawn).
      days: calibration days (arrivals in the first 80 % of them).
      holdout_days: days simulated after the calibration period.
      seed: random seed (stream `_STREAM_LIFECYCLE`).
    """
    n = len(population)
    if n == 0:
        return
    rng = stream(seed, _STREAM_LIFECYCLE)
    total_ms = (days + holdout_days) * DAY_MS
    arch = np.array([u.arch_index for u in population], dtype=np.int64)
    tz_ms = np.array([u.tz_offset_min for u in population], dtype=np.int64) * MINUTE_MS
    processes = [ARCHETYPES[name].purchases for name in ARCHETYPE_NAMES]

    def column(field: str) -> np.ndarray:
        return np.array([getattr(process, field) for process in processes])[arch]

    lam = rng.gamma(column("r"), 1.0 / column("alpha"))
    p = rng.beta(column("a"), column("b"))

    day = rng.integers(0, arrival_days(days), size=n)
    acquired = day * DAY_MS + (local_time_ms(arch, rng.random(n), rng.random(n)) - tz_ms) % DAY_MS
    first = acquired + rng.exponential(1.0 / column("first_purchase_rate")) * DAY_MS
    quit_ = acquired + FIRST_VISIT_MS + rng.exponential(1.0 / column("nonbuyer_dropout")) * DAY_MS
    buyer = (first < quit_) & (first < total_ms)

    # Repeat purchases: Poisson(lambda) while alive; after each, leave with probability p.
    owner = [np.flatnonzero(buyer)]
    when = [first[buyer]]
    left = np.zeros(n, dtype=bool)
    now = first.copy()
    active = buyer.copy()
    step_scale = DAY_MS / np.maximum(lam, 1e-12)
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(step_scale[idx])
        inside = now[idx] < total_ms
        active[idx[~inside]] = False
        bought = idx[inside]
        owner.append(bought)
        when.append(now[bought])
        leave = rng.random(bought.size) < p[bought]
        left[bought[leave]] = True
        active[bought[leave]] = False

    owner_all = np.concatenate(owner)
    when_all = np.concatenate(when)
    order = np.lexsort((when_all, owner_all))
    owner_all, when_all = owner_all[order], when_all[order]
    when_all, kept = _in_daily_rhythm(when_all, owner_all, arch, tz_ms, acquired, total_ms, rng)
    # A user whose last orders moved past the period end did not leave within it.
    left[np.unique(owner_all[~kept])] = False
    owner_all, when_all = owner_all[kept], when_all[kept]
    order = np.lexsort((when_all, owner_all))
    owner_all, when_all = owner_all[order], when_all[order]
    bounds = np.searchsorted(owner_all, np.arange(n + 1))

    acquired_list = acquired.astype(np.int64).tolist()
    quit_list = quit_.tolist()
    for i, user in enumerate(population):
        user.purchase_rate = float(lam[i])
        user.dropout_probability = float(p[i])
        user.acquired_ms = acquired_list[i]
        user.orders_ms = when_all[bounds[i]:bounds[i + 1]].tolist()
        if user.orders_ms:
            user.dropped_out_ms = user.orders_ms[-1] if left[i] else None
        else:
            user.dropped_out_ms = int(quit_list[i]) if quit_list[i] < total_ms else None


def _in_daily_rhythm(when: np.ndarray, owner: np.ndarray, arch: np.ndarray, tz_ms: np.ndarray,
                     acquired: np.ndarray, total_ms: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Puts orders (sorted by owner, then time) into their users' daily rhythm, one per local day.

    Each order keeps its local calendar day and gets a time of day drawn from the
    archetype's hour profile; an order on a day that already has one of its user's
    orders moves to the next day (so purchase days count orders). Returns the new
    times and which orders are kept: an order moved to a day that starts after the
    period end is dropped (it would have come after the end).
    """
    if when.size == 0:
        return when.astype(np.int64), np.ones(0, dtype=bool)
    when = np.floor(when).astype(np.int64)
    tz = tz_ms[owner]
    local_day = ((when + tz) // DAY_MS).tolist()
    owners = owner.tolist()
    for j in range(1, len(local_day)):
        if owners[j] == owners[j - 1] and local_day[j] <= local_day[j - 1]:
            local_day[j] = local_day[j - 1] + 1
    day_start = np.array(local_day, dtype=np.int64) * DAY_MS - tz
    kept = day_start < total_ms
    moved = day_start + local_time_ms(arch[owner], rng.random(when.size), rng.random(when.size))
    # The last local day may end after the period: draw within its part inside it.
    tail = moved >= total_ms
    moved[tail] = day_start[tail] + ((moved[tail] - day_start[tail]) % np.maximum(1, total_ms - day_start[tail]))
    earliest = acquired[owner].astype(np.int64) + FIRST_VISIT_MS
    moved = np.where(moved >= earliest, moved, np.minimum(np.maximum(when, earliest), total_ms - 1))
    return moved, kept
