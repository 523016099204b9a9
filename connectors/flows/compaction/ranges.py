"""Offset ranges: which (partition, offset) positions a compacted file holds, as sorted runs."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MAX_RANGES_PER_PARTITION = 1000  # beyond this, the smallest gaps are bridged (ranges then cover)


def offset_ranges(partitions: np.ndarray, offsets: np.ndarray, max_runs: int = MAX_RANGES_PER_PARTITION) -> dict[int, list[list[int]]]:
    """{partition: [[first, last], ...]}: contiguous runs of the offsets given (inclusive).

    Exact while a partition has at most `max_runs` runs; beyond that the smallest gaps are
    bridged, so the ranges still cover every offset but may span offsets not in the set.
    """
    if len(offsets) == 0:
        return {}
    parts, offs = sorted_pairs(np.asarray(partitions, np.int64), np.asarray(offsets, np.int64))
    return ranges_of_sorted(parts, offs, max_runs)


def sorted_pairs(partitions: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(partition, offset) pairs in ascending order, duplicates kept (a multiset, exactly).

    Packs each pair into one int64 (partition << 40 | offset) and sorts that when every pair
    fits — one numeric sort instead of a two-key lexsort; otherwise lexsort.
    """
    if len(offsets) == 0:
        return partitions.astype(np.int64), offsets.astype(np.int64)
    if partitions.min() >= 0 and partitions.max() < (1 << 22) and offsets.min() >= 0 and offsets.max() < (1 << 40):
        packed = np.sort((partitions.astype(np.int64) << 40) | offsets.astype(np.int64))
        return packed >> 40, packed & ((1 << 40) - 1)
    order = np.lexsort((offsets, partitions))
    return partitions[order].astype(np.int64), offsets[order].astype(np.int64)


def ranges_of_sorted(parts: np.ndarray, offs: np.ndarray, max_runs: int = MAX_RANGES_PER_PARTITION) -> dict[int, list[list[int]]]:
    """`offset_ranges` of pairs already in ascending (partition, offset) order (no hashing)."""
    result: dict[int, list[list[int]]] = {}
    if len(offs) == 0:
        return result
    bounds = np.flatnonzero(np.diff(parts)) + 1
    for lo, hi in zip(np.concatenate(([0], bounds)), np.concatenate((bounds, [len(parts)])), strict=True):
        o = offs[lo:hi]
        o = o[np.concatenate(([True], np.diff(o) != 0))]  # unique (sorted)
        breaks = np.nonzero(np.diff(o) != 1)[0]
        if len(breaks) + 1 > max_runs:
            gaps = o[breaks + 1] - o[breaks]
            breaks = np.sort(breaks[np.argsort(-gaps, kind="stable")[: max_runs - 1]])
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [len(o) - 1]))
        result[int(parts[lo])] = [[int(o[s]), int(o[e])] for s, e in zip(starts, ends, strict=True)]
    return result


def merge_ranges(per_file: Iterable[dict[int, list[list[int]]] | None]) -> dict[int, list[list[int]]]:
    """Per partition, the offset runs of several files merged into sorted, non-adjacent [first, last] spans."""
    merged: dict[int, list[list[int]]] = {}
    for ranges in per_file:
        for p, runs in (ranges or {}).items():
            merged.setdefault(int(p), []).extend([list(r) for r in runs])
    out: dict[int, list[list[int]]] = {}
    for p, runs in sorted(merged.items()):
        runs.sort()
        acc: list[list[int]] = []
        for a, b in runs:
            if acc and a <= acc[-1][1] + 1:
                acc[-1][1] = max(acc[-1][1], b)
            else:
                acc.append([a, b])
        out[p] = acc
    return out
