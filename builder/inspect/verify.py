"""``frozenaug-build verify`` and ``inspect``: check every shard against the manifest; summarise.

``verify`` reads each shard's bytes (sha256) and runs the format's one check of a shard against
the manifest (``format.manifest.problems``: attributes, dataset names, dtypes and shapes, labels
and their per-class counts, source rows, soft labels), which the reader runs too; in encoded
shards it also decodes every image (``format.manifest.image_problems``). It names every bad
shard and what is wrong with it, and exits 2 if any is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from frozenaug import format as fmt
from frozenaug.common.errors import EXIT_INPUT_ERROR


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the build, then its finishing build (build --finish), if it has one."""
    m = fmt.load_manifest(args.dir)
    code = _verify(m)
    if m.finish is not None:
        manifest = m.root / fmt.FINISH_DIR / fmt.MANIFEST_NAME
        if not fmt.finish_matches(m.root, m.finish):
            print(f"{manifest}: missing or not the finishing build {m.root / fmt.MANIFEST_NAME} "
                  "records (its sha256 differs); run the build again", file=sys.stderr)
            return EXIT_INPUT_ERROR
        code = max(code, _verify(fmt.load_manifest(m.root / fmt.FINISH_DIR)))
    return code


def _verify(m: fmt.Manifest) -> int:
    bad = 0
    for problem in fmt.manifest_problems(m):
        print(f"{m.root / fmt.MANIFEST_NAME}: {problem}", file=sys.stderr)
        bad += 1
    for s in tqdm(m.shards, unit="shard", desc="verify", disable=None, file=sys.stderr):
        with fmt.checked_shard(m, s, checksum=True, decode=True) as (_, problems):
            pass
        if problems:
            bad += 1
            print(f"{m.path_of(s)}: {'; '.join(problems)}", file=sys.stderr)
    if bad:
        print(f"FAILED: {bad} problem(s) in {m.root} ({len(m.shards)} shards)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(f"OK {len(m.shards)} shards" + (f" in {m.root}" if m.root.name == fmt.FINISH_DIR
                                           else ""))
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
    stored = {m.encoding_of(s) for s in m.shards if s.split == "train"}
    held = {m.encoding_of(s) for s in m.shards if s.split != "train"}
    print(f"images     {'x'.join(str(v) for v in m.image_shape)} uint8, stored "
          f"{', '.join(sorted(stored)) or m.encoding} (train)"
          + (f", {', '.join(sorted(held))} (val/test)" if held else ""))
    policy = raw.get("policy") or {}
    print(f"policy     {policy.get('name', '?')}  hash {str(raw.get('policy_hash', '?'))[:16]}  "
          f"mix {json.dumps(policy.get('mix'))}")
    print(f"epochs     {m.epochs} frozen, seed {m.seed}")
    if m.finish is not None:
        print(f"finish     {m.finish.get('policy')} K={m.finish.get('epochs')} in {m.finish_dir} "
              "(read by fit's finishing phase)")
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
