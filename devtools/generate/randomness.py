"""Deterministic random streams: one PCG64 generator per (seed, purpose[, key...])."""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator

import numpy as np

from devtools.generate.archetypes import _MAX_RUN, _MEAN_GAP_MS

# Random streams: (seed, purpose[, day]) -> independent PCG64 generator.
_STREAM_POPULATION = 1
_STREAM_DAY = 2
_STREAM_CAMPAIGNS = 3
_STREAM_CORRUPTION = 4


def stream(seed: int, purpose: int, *keys: int) -> np.random.Generator:
    """The generator of one purpose (and key, e.g. a day) under `seed`."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, *keys])))


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
