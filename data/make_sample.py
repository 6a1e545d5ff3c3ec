#!/usr/bin/env python3
"""Regenerate data/sample/ (one folder of JPEGs per class) from the shared blood-cell set.

    python data/make_sample.py [--shared /work/shared/data/bloodcells] [--out data/sample]

Draws, deterministically (seed 0):
* PER_CLASS (``--per-class``) real images per class, none of them in any scan cluster of
  the full set;
* the first duplicate pair and the label-conflict pair the scan finds in the full set;
* COPIES copies of each of the two injected foreign pictures, taken among the full set's
  altered copies within 2 bits of the cluster's representative, so that the default
  ``outlier_min=10`` flags them.
Each image is written as JPEG quality 95 to ``<class>/<row>.jpg`` (row: index in the full set).
The script then scans what it wrote and fails unless the sample shows exactly what it should.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from frozenaug.builder.clean.phash import hamming  # noqa: E402
from frozenaug.builder.clean.scan import scan_dataset  # noqa: E402
from frozenaug.data.intake import load_dataset  # noqa: E402

CLASSES = ["basophil", "eosinophil", "erythroblast", "immature_granulocyte",
           "lymphocyte", "monocyte", "neutrophil", "platelet"]
# 150 real cells a class (~5 MB of JPEGs): enough that `make demo` trains a model a newcomer
# believes (>= 0.85 test accuracy) in a few minutes on 2 CPU cores; 50 a class gave ~0.5.
PER_CLASS = 150
COPIES = 15
SEED = 0


def load_shared(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    spec = importlib.util.spec_from_file_location("unpack", shared / "unpack.py")
    unpack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unpack)
    images, labels = unpack.load()
    return images, labels.ravel().astype(np.int64)


def choose(images: np.ndarray, labels: np.ndarray, per_class: int = PER_CLASS) -> np.ndarray:
    from frozenaug.data.intake import Dataset

    ds = Dataset(images, labels, CLASSES, "shared", [str(i) for i in range(len(labels))])
    scan = scan_dataset(ds)
    rng = np.random.default_rng(SEED)
    in_cluster = np.bincount(scan.groups)[scan.groups] > 1
    rows = []
    for c in range(len(CLASSES)):
        pool = np.flatnonzero((labels == c) & ~in_cluster)
        rows.append(np.sort(rng.choice(pool, per_class, replace=False)))
    for reason in ("duplicate", "label_conflict"):
        first = next(c for c in scan.clusters if c["reason"] == reason)
        rows.append(np.array(first["members"]))
    for c in (c for c in scan.clusters if c["reason"] == "outlier_cluster"):
        rep = c["representative"]
        members = np.flatnonzero(scan.groups == scan.groups[rep])
        near = members[hamming(scan.hashes[members], scan.hashes[rep]) <= 2]
        rows.append(np.sort(rng.choice(near, COPIES, replace=False)))
    return np.unique(np.concatenate(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default="/work/shared/data/bloodcells")
    p.add_argument("--out", default=str(ROOT / "data" / "sample"))
    p.add_argument("--per-class", type=int, default=PER_CLASS)
    args = p.parse_args(argv)
    images, labels = load_shared(Path(args.shared))
    rows = choose(images, labels, args.per_class)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for c in CLASSES:
        (out / c).mkdir(parents=True)
    for i in rows:
        ok, buf = cv2.imencode(".jpg", images[i][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        (out / CLASSES[labels[i]] / f"{i:05d}.jpg").write_bytes(buf.tobytes())
    # The sample must show what it is for: 2 outlier clusters of COPIES, 1 conflict, 1 duplicate.
    s = scan_dataset(load_dataset(out)).summary()
    print(f"{len(rows)} images in {out}: {s}")
    expected = {"outlier_cluster": 2 * COPIES, "label_conflict": 2, "duplicate": 1}
    if s["removed_by_reason"] != expected:
        print(f"error: expected removals {expected}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
