"""``frozenaug-build verify`` and ``inspect``: check every shard against the manifest; summarise.

``verify`` reads each shard's bytes (sha256) and its HDF5 structure: attributes, dataset names,
dtypes and shapes, labels and their per-class counts. It names every bad shard and what is wrong
with it, and exits 2 if any is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from builder import format as fmt
from builder.errors import EXIT_INPUT_ERROR
from builder.shards import sha256_file

_EXPECTED = {
    fmt.DS_IMAGES: fmt.IMAGE_DTYPE,
    fmt.DS_LABELS: fmt.LABEL_DTYPE,
    fmt.DS_SOURCE_INDEX: fmt.SOURCE_INDEX_DTYPE,
    fmt.DS_SOFT_LABELS: fmt.SOFT_LABEL_DTYPE,
}


def _check_attrs(f: h5py.File, m: fmt.Manifest, s: fmt.ShardEntry) -> list[str]:
    want: dict[str, Any] = {
        fmt.ATTR_SCHEMA_VERSION: fmt.SCHEMA_VERSION,
        fmt.ATTR_SPLIT: s.split,
        fmt.ATTR_EPOCH: s.epoch,
        fmt.ATTR_SHARD_INDEX: s.index,
    }
    if s.split == "train" and "policy_hash" in m.raw:
        want[fmt.ATTR_POLICY_HASH] = m.raw["policy_hash"]
    problems = []
    for name, value in want.items():
        got = f.attrs.get(name)
        got = got.decode() if isinstance(got, bytes) else got
        got = got.item() if isinstance(got, np.generic) else got  # printed as 1, not np.int64(1)
        if got is None or got != value:
            problems.append(f"attribute {name} is {got!r}, manifest says {value!r}")
    try:
        names = json.loads(f.attrs.get(fmt.ATTR_CLASS_NAMES, ""))
    except (TypeError, ValueError):
        names = None
    if names != m.class_names:
        problems.append(f"attribute {fmt.ATTR_CLASS_NAMES} is {names!r}, not the manifest's")
    return problems


def _check_datasets(f: h5py.File, m: fmt.Manifest, s: fmt.ShardEntry) -> list[str]:
    n, c = s.samples, m.num_classes
    shapes = {
        fmt.DS_IMAGES: (n, *m.image_shape),
        fmt.DS_LABELS: (n,),
        fmt.DS_SOURCE_INDEX: (n,),
    }
    if s.soft_labels:
        shapes[fmt.DS_SOFT_LABELS] = (n, c)
    problems = [f"unexpected dataset {k!r}" for k in f if k not in shapes]
    for name, shape in shapes.items():
        if name not in f:
            problems.append(f"dataset {name!r} missing")
        elif f[name].dtype != np.dtype(_EXPECTED[name]) or f[name].shape != shape:
            problems.append(f"dataset {name!r} is {f[name].dtype} {f[name].shape}, "
                            f"expected {_EXPECTED[name]} {shape}")
    if problems:
        return problems
    labels = f[fmt.DS_LABELS][()]
    if n and (labels.min() < 0 or labels.max() >= c):
        return [f"labels outside 0..{c - 1}"]
    counts = np.bincount(labels, minlength=c).tolist()
    if counts != s.class_counts:
        problems.append(f"class counts {counts} differ from the manifest's {s.class_counts}")
    num_samples = m.raw.get("input", {}).get("num_samples")
    src = f[fmt.DS_SOURCE_INDEX][()]
    if n and num_samples is not None and (src.min() < 0 or src.max() >= num_samples):
        problems.append(f"source_index outside 0..{num_samples - 1}")
    if s.soft_labels:
        soft = f[fmt.DS_SOFT_LABELS][()]
        if n and (not np.all(soft >= 0) or not np.allclose(soft.sum(1), 1.0, atol=1e-4)):
            problems.append("soft_labels rows are not distributions (negative or sum != 1)")
        elif n and not np.all(soft[np.arange(n), labels] >= soft.max(1)):
            problems.append("labels are not the dominant class of soft_labels")
    return problems


def check_shard(m: fmt.Manifest, s: fmt.ShardEntry) -> list[str]:
    """Everything wrong with one shard, as short phrases; empty if it is fine."""
    path = m.path_of(s)
    if not path.is_file():
        return ["missing"]
    problems = []
    if sha256_file(path) != s.sha256:
        problems.append(f"sha256 differs from the manifest's (file of {path.stat().st_size} "
                        "bytes changed or truncated)")
    try:
        with h5py.File(path, "r") as f:
            problems += _check_attrs(f, m, s)
            problems += _check_datasets(f, m, s)
    except (OSError, KeyError, ValueError, TypeError) as e:
        problems.append(f"cannot be read as HDF5 ({type(e).__name__}: {e})")
    return problems


def _check_manifest(m: fmt.Manifest) -> list[str]:
    """Whole-build checks: unique paths, every frozen epoch present with equal size."""
    problems = []
    paths = [s.path for s in m.shards]
    if len(set(paths)) != len(paths):
        problems.append("manifest lists a shard path twice")
    sizes = [sum(s.samples for s in m.shards_of("train", e)) for e in range(m.epochs)]
    if not sizes or 0 in sizes or len(set(sizes)) != 1:
        problems.append(f"train samples per frozen epoch 0..{m.epochs - 1} are {sizes}; "
                        "expected the same non-zero count in each")
    return problems


def cmd_verify(args: argparse.Namespace) -> int:
    m = fmt.load_manifest(args.dir)
    bad = 0
    for problem in _check_manifest(m):
        print(f"{m.root / fmt.MANIFEST_NAME}: {problem}", file=sys.stderr)
        bad += 1
    for s in tqdm(m.shards, unit="shard", desc="verify", disable=None, file=sys.stderr):
        problems = check_shard(m, s)
        if problems:
            bad += 1
            print(f"{m.path_of(s)}: {'; '.join(problems)}", file=sys.stderr)
    if bad:
        print(f"FAILED: {bad} problem(s) in {m.root} ({len(m.shards)} shards)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(f"OK {len(m.shards)} shards")
    return 0


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def summary_rows(m: fmt.Manifest) -> list[tuple[str, str, int, int, list[int], int | None]]:
    """(split, epoch, shards, samples, class counts, bytes or None if a shard is missing)."""
    groups: dict[tuple[str, int], list[fmt.ShardEntry]] = {}
    for s in m.shards:
        groups.setdefault((s.split, s.epoch), []).append(s)
    rank = {split: i for i, split in enumerate(fmt.SPLITS)}
    order = sorted(groups, key=lambda k: (rank.get(k[0], len(rank)), k[1]))
    rows = []
    for split, epoch in order:
        shards = groups[(split, epoch)]
        counts = np.sum([s.class_counts for s in shards], axis=0).tolist()
        sizes = [_size(m.path_of(s)) for s in shards]
        total = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
        rows.append((split, "-" if epoch < 0 else str(epoch), len(shards),
                     sum(s.samples for s in shards), counts, total))
    return rows


def cmd_inspect(args: argparse.Namespace) -> int:
    m = fmt.load_manifest(args.dir)
    raw = m.raw
    inp = raw.get("input") or {}
    print(f"build      {m.root}  ({raw['format']} schema {raw['schema_version']}, "
          f"frozenaug {raw.get('frozenaug_version', '?')})")
    print(f"input      {inp.get('path', '?')}  ({inp.get('num_samples', '?')} images, "
          f"fingerprint {str(inp.get('fingerprint', '?'))[:16]})")
    print(f"classes    {m.num_classes}: {', '.join(m.class_names)}")
    print(f"images     {'x'.join(str(v) for v in m.image_shape)} uint8")
    policy = raw.get("policy") or {}
    print(f"policy     {policy.get('name', '?')}  hash {str(raw.get('policy_hash', '?'))[:16]}  "
          f"mix {json.dumps(policy.get('mix'))}")
    print(f"epochs     {m.epochs} frozen, seed {m.seed}")
    split = raw.get("split") or {}
    if split:
        print(f"split      fractions {split.get('fractions')}, counts {split.get('counts')}")
    scan = raw.get("scan")
    print(f"scan       {json.dumps(scan, sort_keys=True) if scan else 'none (not cleaned)'}")
    print()
    header = ("split", "epoch", "shards", "samples", "MiB", "class counts")
    table = [header] + [
        (split, epoch, str(n), str(samples), "missing" if b is None else f"{b / 2**20:.1f}",
         " ".join(str(c) for c in counts))
        for split, epoch, n, samples, counts, b in summary_rows(m)
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        cells = [v.ljust(w) if i < 2 else v.rjust(w)
                 for i, (v, w) in enumerate(zip(r[:-1], widths, strict=True))]
        print("  ".join([*cells, r[-1]]))
    return 0
