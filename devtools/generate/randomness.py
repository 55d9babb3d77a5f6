"""Deterministic random streams: one PCG64 generator per (seed, purpose[, key...]).

Each purpose draws from its own stream, so that, for example, the valid events do
not depend on `--corrupt-rate` (corruption has its own stream) and a day's browsing
does not depend on the days before it.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator

import numpy as np

from devtools.generate.archetypes import _MAX_RUN, _MEAN_GAP_MS, DAY_MS, HOUR_CDF, HOUR_MS

# Random streams: (seed, purpose[, day]) -> independent PCG64 generator.
_STREAM_POPULATION = 1
_STREAM_DAY = 2
_STREAM_CAMPAIGNS = 3
_STREAM_CORRUPTION = 4
_STREAM_LIFECYCLE = 5


def stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """The generator of one purpose (and key, e.g. a day) under `seed`."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, *keys])))


def local_time_ms(arch_index: np.ndarray, u_hour: np.ndarray, u_within: np.ndarray) -> np.ndarray:
    """Local times of day (ms after local midnight) from the archetypes' hour profiles.

    Args:
      arch_index: archetype index (into `ARCHETYPE_NAMES`) of each draw.
      u_hour: uniform [0, 1) draws choosing the hour from the archetype's profile.
      u_within: uniform [0, 1) draws placing the time within that hour.
    """
    arch_index = np.asarray(arch_index, dtype=np.int64)
    flat = (HOUR_CDF + np.arange(len(HOUR_CDF))[:, None]).ravel()
    hour = np.searchsorted(flat, arch_index + np.asarray(u_hour), side="right") - 24 * arch_index
    hour = np.minimum(hour, 23)
    return np.minimum(hour * HOUR_MS + (np.asarray(u_within) * HOUR_MS).astype(np.int64), DAY_MS - 1)


def _blocks(draw: Callable[[int], np.ndarray]) -> Iterator[list[float]]:
    while True:
        yield draw(1 << 15).tolist()


class _Draws:
    """Scalar random numbers served from numpy blocks (fast, deterministic).

    `u()` is uniform in [0, 1), `normal()` standard normal; both are C-level
    iterators over blocks drawn from the one generator as they run out.
    """

    __slots__ = ("u", "normal")

    def __init__(self, rng: np.random.Generator):
        self.u: Callable[[], float] = itertools.chain.from_iterable(_blocks(rng.random)).__next__
        self.normal: Callable[[], float] = itertools.chain.from_iterable(_blocks(rng.standard_normal)).__next__

    def geometric(self, mean: float) -> int:
        """1, 2, 3, ... with the given mean (>= 1), capped at `_MAX_RUN`."""
        if mean <= 1.0:
            return 1
        return min(_MAX_RUN, 1 + int(math.log(1.0 - self.u()) / math.log(1.0 - 1.0 / mean)))

    def gap_ms(self) -> int:
        return 1000 + int(-_MEAN_GAP_MS * math.log(1.0 - self.u()))
