"""RFM cut points written out from the rule in `models.rfm`'s docstring, independent of its code."""

from __future__ import annotations

import math


def tie_aware_cuts_direct(values, buckets: int = 5) -> list[float]:
    """Each cut in turn: the smallest value with at least 1/(buckets left) of the values above
    the previous cut at or below it (a sorted list's k-th value, k = ceil(share * count))."""
    remaining = sorted(float(v) for v in values)
    cuts: list[float] = []
    for left in range(buckets, 1, -1):
        if not remaining:
            cuts.append(cuts[-1])
            continue
        cut = remaining[math.ceil(len(remaining) / left) - 1]
        cuts.append(cut)
        remaining = [v for v in remaining if v > cut]
    return cuts
