"""Find duplicates, label conflicts and injected outliers through perceptual hashes.

Rows whose 64-bit pHashes lie within ``threshold`` bits of each other are linked, and a group is
a connected component of those links (single linkage: a chain of small steps joins a group, which
is how the many slightly altered copies of an injected picture end up in one group). Each group
of two or more rows is then classified:

* ``outlier_cluster``: ``outlier_min`` rows or more: one picture repeated that often is foreign
  data injected into the set, whatever its labels; every member is removed;
* ``label_conflict``: the members disagree on the label; all are removed (which one is right is
  unknowable, and keeping one would train on a coin flip);
* ``duplicate``: same picture, same label; the lowest row index is kept, the rest removed.

Pairs are found on the distinct hash values (exact duplicates cost nothing): blocked all-pairs
with ``np.bitwise_count`` up to ``ALLPAIRS_MAX`` distinct values, multi-index hashing beyond
(split the 64 bits into ``threshold + 1`` bands; by pigeonhole two hashes within ``threshold``
bits agree exactly on at least one band, so only rows sharing a band value are compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from frozenaug.builder.clean.options import OUTLIER_MIN, THRESHOLD
from frozenaug.builder.clean.phash import phash

# Measured on the shared blood-cell set (13,759 images, see docs/SCAN.md). Every hash has exactly
# 32 bits set (31 AC coefficients above their median, plus DC), so distances are even and 4 and
# 5 behave the same. Distinct real cells start at distance 6: at 6 the scan removes 39 real
# images (18 pairs of different cells, looked at), at 8 it removes 311, at 10 over 2,200. At 4 it
# removes all 1,800 injected copies (they chain into two groups of exactly 1,600 and 200) and 9
# real images, the genuine duplicates (7 exact copies, one pair at distance 4) and the one
# duplicate with two labels. JPEG q75 and +20 brightness stay within 4 bits; a 2-pixel shift of a
# 96-pixel cell does for only ~1/3 of cells (median 6 bits), a limit of an 8x8 DCT hash on small,
# similar images that no threshold fixes without merging distinct cells.
DEFAULT_THRESHOLD = THRESHOLD.default
# The split groups the kept rows again, at threshold + SPLIT_GROUP_MARGIN bits (8 by default),
# and keeps each group in one split: the removal radius leaves photos of one cell that are too
# far apart to remove (a 2-pixel shift) but too close to sit in train and test. Measured on the
# 11,950 rows the blood-cell scan keeps (docs/SCAN.md): copies of 1,000 cells shifted by 2
# pixels lie within 8 bits of their original for 88 % (within 4: 29 %; 1-pixel shifts: all),
# and at 8 the groups stay small (181 groups of 400 rows, the largest 7), so every class keeps
# its fractions; at 10 (97 % of shifts) single linkage chains 736 distinct cells into one group.
SPLIT_GROUP_MARGIN = 4
DEFAULT_OUTLIER_MIN = OUTLIER_MIN.default
ALLPAIRS_MAX = 50_000  # distinct hashes; beyond this, multi-index hashing
TILE = 1024  # all-pairs tile side: 1024^2 uint64 XORs = 8 MB (2048 was 2x slower: cache)
SMALL_BUCKET = 64  # multi-index buckets up to this size are paired by sorted-order offsets

REASONS = ("outlier_cluster", "label_conflict", "duplicate")


# --- grouping -------------------------------------------------------------------------------


class _Links:
    """Close pairs found so far, reduced to components whenever the buffer grows large.

    Storing every pair would not bound memory (a cluster of k near-identical hashes has ~k^2/2
    pairs); collapsing the buffer into one star per component every ``FLUSH`` pairs does.
    """

    # 250k pairs: 4 MB of buffer, ~2x that more while collapsing. Measured on 16 copies of the
    # shared set (220k hashes; bench/intake_rss.py), scan + split grouping peaked at 65 MB
    # traced with 1M and 31 MB with 250k, in no more CPU time (a collapse is one
    # connected_components over the n nodes); 4M added ~100 MB to the peak RSS.
    FLUSH = 250_000

    def __init__(self, n: int) -> None:
        self.n = n
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.count = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.size:
            self.a.append(a.astype(np.int64))
            self.b.append(b.astype(np.int64))
            self.count += a.size
            if self.count > self.FLUSH:
                self._collapse()

    def components(self) -> np.ndarray:
        """Component label per node (0..n-1)."""
        a = np.concatenate(self.a) if self.a else np.zeros(0, np.int64)
        b = np.concatenate(self.b) if self.b else np.zeros(0, np.int64)
        graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(self.n, self.n))
        return connected_components(graph, directed=False)[1]

    def _collapse(self) -> None:
        labels = self.components()
        _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
        root = first[inv]
        star = np.flatnonzero(root != np.arange(self.n))
        self.a, self.b, self.count = [star], [root[star]], star.size


def _link_close(links: _Links, u: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                threshold: int) -> None:
    close = np.bitwise_count(u[ia] ^ u[ib]) <= threshold
    links.add(ia[close], ib[close])


def _allpairs(u: np.ndarray, threshold: int, links: _Links,
              idx: np.ndarray | None = None) -> None:
    """Link every pair of ``u[idx]`` (default: all of ``u``) within ``threshold``, tile by tile."""
    idx = np.arange(len(u)) if idx is None else idx
    vals = u[idx]
    n = len(idx)
    for i in range(0, n, TILE):
        row = vals[i : i + TILE, None]
        for j in range(i, n, TILE):
            close = np.bitwise_count(row ^ vals[None, j : j + TILE]) <= threshold
            flat = np.flatnonzero(close)  # much faster than a 2-D nonzero
            a, b = np.divmod(flat, close.shape[1])
            a, b = a + i, b + j
            upper = a < b
            links.add(idx[a[upper]], idx[b[upper]])


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of ``threshold + 1`` contiguous bit bands covering all 64 bits."""
    k = threshold + 1
    widths = [64 // k + (1 if i < 64 % k else 0) for i in range(k)]
    shifts = np.cumsum([0, *widths[:-1]])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def _multi_index(u: np.ndarray, threshold: int, links: _Links) -> None:
    """Link pairs within ``threshold`` by comparing only hashes that share a band value."""
    for shift, width in _bands(threshold):
        key = (u >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        k = key[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        sizes = np.diff(np.r_[starts, len(k)])
        # Large buckets: tiled all-pairs within the bucket.
        for s, n in zip(starts[sizes > SMALL_BUCKET], sizes[sizes > SMALL_BUCKET], strict=True):
            _allpairs(u, threshold, links, order[s : s + n])
        # Small buckets: pair each element with the ones 1..d places later in sorted order.
        small = np.repeat(sizes <= SMALL_BUCKET, sizes)
        o, ks = order[small], k[small]
        for d in range(1, min(SMALL_BUCKET, len(o))):
            same = np.flatnonzero(ks[:-d] == ks[d:])
            if not same.size:
                break
            _link_close(links, u, o[same], o[same + d], threshold)


def find_groups(hashes: np.ndarray, threshold: int, *, method: str = "auto") -> np.ndarray:
    """Group id per row: connected components of pairs within ``threshold`` Hamming bits.

    Ids are 0..G-1, numbered in order of each group's first row, so equal input gives equal ids.
    ``method`` ("auto", "allpairs", "mih") forces a pair search, for tests and benchmarks.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    THRESHOLD.check(threshold, "--threshold")  # the bands need 0..63
    if hashes.size == 0:
        return np.zeros(0, np.int64)
    u, inv = np.unique(hashes, return_inverse=True)
    links = _Links(len(u))
    if method == "auto":
        method = "allpairs" if len(u) <= ALLPAIRS_MAX else "mih"
    if method == "allpairs":
        _allpairs(u, threshold, links)
    elif method == "mih":
        _multi_index(u, threshold, links)
    else:
        raise ValueError(f"unknown method {method!r}")
    root = links.components()[inv.ravel()]
    # Renumber by first occurrence: np.unique's first-index order.
    _, first, dense = np.unique(root, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[dense.ravel()]


def split_groups(hashes: np.ndarray, keep: np.ndarray, threshold: int) -> np.ndarray:
    """Group id per row for the split: kept rows within ``threshold + SPLIT_GROUP_MARGIN`` bits
    of each other (single linkage) share one; removed rows get -1."""
    groups = np.full(len(hashes), -1, np.int64)
    groups[keep] = find_groups(hashes[keep], min(63, threshold + SPLIT_GROUP_MARGIN))
    return groups


# --- classification -------------------------------------------------------------------------


@dataclass
class ScanResult:
    """What the scan found. ``removed`` holds (input row, reason), sorted by row."""

    hashes: np.ndarray  # (N,) uint64
    groups: np.ndarray  # (N,) int64 group id
    keep: np.ndarray  # (N,) bool
    removed: list[tuple[int, str]]
    clusters: list[dict[str, Any]]  # one per group of 2+ rows
    threshold: int = DEFAULT_THRESHOLD
    outlier_min: int = DEFAULT_OUTLIER_MIN
    class_names: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for the manifest and the console: JSON-ready, no per-row lists."""
        removed = {r: 0 for r in REASONS}
        for _, reason in self.removed:
            removed[reason] += 1
        clusters = {r: 0 for r in REASONS}
        for c in self.clusters:
            clusters[c["reason"]] += 1
        return {
            "images": int(len(self.keep)),
            "kept": int(self.keep.sum()),
            "removed": int(len(self.removed)),
            "removed_by_reason": removed,
            "clusters_by_reason": clusters,
            "threshold": int(self.threshold),
            "outlier_min": int(self.outlier_min),
        }


def classify(groups: np.ndarray, labels: np.ndarray, outlier_min: int,
             class_names: list[str] | None = None) -> tuple[np.ndarray, list, list]:
    """(keep mask, removed (row, reason) pairs, cluster dicts) for given groups and labels."""
    n = len(groups)
    keep = np.ones(n, bool)
    reason_of: dict[int, str] = {}
    clusters: list[dict[str, Any]] = []
    sizes = np.bincount(groups) if n else np.zeros(0, np.int64)
    multi = np.flatnonzero(sizes > 1)
    if multi.size:
        rows = np.flatnonzero(np.isin(groups, multi))
        rows = rows[np.argsort(groups[rows], kind="stable")]  # by group, then row
        bounds = np.flatnonzero(np.r_[True, groups[rows][1:] != groups[rows][:-1]])
        for members in np.split(rows, bounds[1:]):
            labs = labels[members]
            if len(members) >= outlier_min:
                reason, gone = "outlier_cluster", members
            elif (labs != labs[0]).any():
                reason, gone = "label_conflict", members
            else:
                reason, gone = "duplicate", members[1:]
            keep[gone] = False
            reason_of.update((int(i), reason) for i in gone)
            values, counts = np.unique(labs, return_counts=True)
            clusters.append({
                "cluster": len(clusters),
                "reason": reason,
                "representative": int(members[0]),
                "size": int(len(members)),
                "labels": {_name(class_names, v): int(c) for v, c in zip(values, counts,
                                                                         strict=True)},
                "members": [int(i) for i in members] if len(members) < outlier_min else None,
            })
    removed = sorted(reason_of.items())
    return keep, removed, clusters


def _name(class_names: list[str] | None, label: int) -> str:
    return class_names[int(label)] if class_names and 0 <= label < len(class_names) else str(label)


def scan_dataset(ds: Any, *, threshold: int | None = DEFAULT_THRESHOLD,
                 outlier_min: int | None = DEFAULT_OUTLIER_MIN,
                 jobs: int | None = None) -> ScanResult:
    """Hash every image of ``ds`` (a ``frozenaug.data.intake.Dataset``), group and classify.

    Raises:
        InputError: threshold outside 0..63 or outlier_min below 2.
    """
    threshold = THRESHOLD.check(
        DEFAULT_THRESHOLD if threshold is None else threshold, "--threshold")
    outlier_min = OUTLIER_MIN.check(
        DEFAULT_OUTLIER_MIN if outlier_min is None else outlier_min, "--outlier-min")
    hashes = phash(ds.images, jobs=jobs, progress=len(ds.images) > 50_000)
    groups = find_groups(hashes, threshold)
    labels = np.asarray(ds.labels, dtype=np.int64)
    keep, removed, clusters = classify(groups, labels, outlier_min, list(ds.class_names))
    return ScanResult(hashes, groups, keep, removed, clusters, threshold, outlier_min,
                      list(ds.class_names))
