"""``scan`` and ``clean``: find what to remove, remove it, split the rest; write the evidence.

Files written to the output folder, each atomically (see docs/SCAN.md for the schemas):

* ``scan.json``   every removed row with its reason and cluster, counts, the clusters;
* ``scan.png``    a contact sheet of the removed clusters and the label conflicts;
* ``split.json``  seed, fractions and the input rows of each split with class counts;
* ``cleaned.npz`` (``clean`` only) the kept images, labels, source_index and class_names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frozenaug.builder.clean.report import contact_sheet_png
from frozenaug.builder.clean.scan import (
    DEFAULT_OUTLIER_MIN,
    DEFAULT_THRESHOLD,
    ScanResult,
    scan_dataset,
    split_groups,
)
from frozenaug.builder.clean.split import (
    DEFAULT_FRACTIONS,
    check_fractions,
    parse_fractions,
)
from frozenaug.builder.clean.split import split_indices as _split_indices
from frozenaug.common.atomic import atomic_path, write_json, write_together
from frozenaug.common.errors import InputError
from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
from frozenaug.data.imagefile import CHUNK_BYTES, drop_pages
from frozenaug.data.intake import Dataset, fingerprint, load_dataset, parse_classes, parse_size
from frozenaug.format.schema import SPLITS

CLEAN_OUTPUTS = ("scan.json", "scan.png", "split.json", "cleaned.npz")


@dataclass
class CleanResult:
    splits: dict[str, np.ndarray]  # split name -> sorted INPUT row indices
    scan: ScanResult | None


def scan_report(ds: Dataset, result: ScanResult) -> dict[str, Any]:
    """The content of scan.json."""
    cluster_of = {int(result.groups[c["representative"]]): c["cluster"] for c in result.clusters}
    removed = [
        {"index": i, "id": ds.ids[i], "reason": reason,
         "cluster": cluster_of[int(result.groups[i])]}
        for i, reason in result.removed
    ]
    summary = result.summary()
    summary["removed_count"] = summary.pop("removed")
    return {
        **summary,
        "source": ds.source,
        "class_names": list(ds.class_names),
        "hash": "phash-dct-64",
        "skipped_files": list(ds.skipped),
        "removed": removed,
        "clusters": result.clusters,
    }


def write_scan(out_dir: Path, ds: Dataset, result: ScanResult) -> None:
    """scan.json and scan.png, together or not at all (a full disk leaves neither)."""
    report = json.dumps(scan_report(ds, result), indent=2, sort_keys=True) + "\n"
    write_together({
        out_dir / "scan.json": report.encode(),
        out_dir / "scan.png": contact_sheet_png(ds.images, ds.labels, ds.class_names,
                                                result.clusters),
    })


def _split_report(ds: Dataset, splits: dict[str, np.ndarray], fractions: Sequence[float],
                  seed: int, medmnist_split: bool) -> dict[str, Any]:
    c = len(ds.class_names)
    return {
        "source": ds.source,
        "input_fingerprint": fingerprint(ds),
        "class_names": list(ds.class_names),
        "seed": int(seed),
        "fractions": None if medmnist_split else [float(f) for f in fractions],
        "medmnist_split": bool(medmnist_split),
        "splits": {
            name: {
                "count": int(len(rows)),
                "class_counts": np.bincount(ds.labels[rows], minlength=c).tolist(),
                "indices": rows.tolist(),
            }
            for name, rows in splits.items()
        },
    }


def clean_dataset(
    ds: Dataset,
    out_dir: str | Path,
    *,
    threshold: int | None = DEFAULT_THRESHOLD,
    outlier_min: int | None = DEFAULT_OUTLIER_MIN,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    jobs: int | None = None,
    scan: bool = True,
    medmnist_split: bool = False,
) -> CleanResult:
    """Scan (unless ``scan`` is False), drop flagged rows, split the rest; write the reports.

    With ``medmnist_split`` the data set's official split is used, restricted to kept rows.

    Raises:
        InputError: bad fractions, seed or scan parameters, or ``medmnist_split`` on a data set
            without an official split. Nothing is written then.
    """
    fractions = check_fractions(fractions)
    if int(seed) < 0:
        raise InputError(f"--seed {seed}: must be >= 0")
    if medmnist_split and ds.official_split is None:
        raise InputError(f"{ds.source}: --medmnist-split needs a MedMNIST npz with its split")
    out_dir = Path(out_dir)
    n = len(ds.labels)
    result = None
    if scan:
        result = scan_dataset(ds, threshold=threshold, outlier_min=outlier_min, jobs=jobs)
        # Near-duplicates the scan kept stay together (a looser radius than removal).
        keep, groups = result.keep, split_groups(result.hashes, result.keep, result.threshold)
    else:
        keep, groups = np.ones(n, bool), np.arange(n)
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise InputError(f"{ds.source}: the scan flagged all {n} images (duplicates across "
                         "classes or outliers); nothing is left to split (--no-clean keeps all)")
    if medmnist_split:
        official = np.asarray(ds.official_split)
        splits = {s: kept[official[kept] == s] for s in SPLITS}
    else:
        local = _split_indices(ds.labels[kept], groups[kept], fractions, seed)
        splits = {s: kept[rows] for s, rows in local.items()}
    if result is not None:
        write_scan(out_dir, ds, result)
    write_json(out_dir / "split.json",
               _split_report(ds, splits, fractions, seed, medmnist_split))
    return CleanResult(splits=splits, scan=result)


def write_cleaned(path: Path, ds: Dataset, splits: dict[str, np.ndarray]) -> None:
    """The kept rows in input order, loadable again as an AN2DL-style npz. The images are
    streamed into the archive a chunk of rows at a time (never all in memory at once)."""
    rows = np.sort(np.concatenate([splits[s] for s in SPLITS]))
    split_of = np.empty(len(ds.labels), dtype="<U5")
    for s in SPLITS:
        split_of[splits[s]] = s
    step = max(1, CHUNK_BYTES // max(1, ds.images[:1].nbytes))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                   allowZip64=True) as z:
        with z.open("images.npy", "w", force_zip64=True) as f:  # as np.savez writes it
            np.lib.format.write_array_header_1_0(f, {
                "descr": np.lib.format.dtype_to_descr(ds.images.dtype), "fortran_order": False,
                "shape": (len(rows), *ds.images.shape[1:])})
            for s in range(0, len(rows), step):
                f.write(np.ascontiguousarray(ds.images[rows[s : s + step]]).data)
                drop_pages(ds.images)
        small = {"labels": ds.labels[rows], "source_index": rows,
                 "class_names": np.array(ds.class_names), "split": split_of[rows]}
        for key, value in small.items():
            with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


# --- command line ---------------------------------------------------------------------------


def _arg(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    v = getattr(args, name, None)
    return default if v is None else v


def _flagged(flag: str, parse: Any, value: Any) -> Any:
    """Run a parser and make its complaint name the flag."""
    try:
        return parse(value)
    except InputError as e:
        raise InputError(f"{flag}: {e}") from None


def _check_out(out: str) -> None:
    """Fail now, not after the scan, if --out cannot become a folder we can write into."""
    p = Path(out)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                raise InputError(f"{q}: exists and is not a folder (--out {out})")
            if not os.access(q, os.W_OK | os.X_OK):
                raise InputError(f"{q}: not writable (--out {out})")
            return


def _load(args: argparse.Namespace) -> Dataset:
    _check_out(args.out)
    size = _flagged("--size", parse_size, _arg(args, "size"))
    classes = _flagged("--classes", parse_classes, _arg(args, "classes"))
    # Ranges of --jobs, --threshold, --outlier-min, --seed: checked by builder.cli with the
    # build's options (frozenaug.builder.config), before this runs.
    return load_dataset(args.input, size=size, class_names=classes,
                        strict=bool(_arg(args, "strict", False)),
                        medmnist_split=bool(_arg(args, "medmnist_split", False)),
                        max_pixels=_arg(args, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))


def _print_scan(result: ScanResult) -> None:
    s = result.summary()
    parts = [f"{r} {s['removed_by_reason'][r]} ({s['clusters_by_reason'][r]} clusters)"
             for r in s["removed_by_reason"]]
    print(f"scan: {s['images']} images, threshold {s['threshold']}: removed {s['removed']} "
          f"[{', '.join(parts)}], kept {s['kept']}")


def cmd_scan(args: argparse.Namespace) -> int:
    """``frozenaug-build scan INPUT --out DIR``: scan.json and scan.png, nothing removed."""
    ds = _load(args)
    result = scan_dataset(ds, threshold=_arg(args, "threshold"),
                          outlier_min=_arg(args, "outlier_min"), jobs=_arg(args, "jobs"))
    write_scan(Path(args.out), ds, result)
    _print_scan(result)
    print(f"wrote {Path(args.out) / 'scan.json'} and scan.png", file=sys.stderr)
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """``frozenaug-build clean INPUT --out DIR``: scan, split, and write cleaned.npz."""
    fractions = _flagged("--split", parse_fractions, _arg(args, "split"))
    ds = _load(args)
    medmnist = bool(_arg(args, "medmnist_split", False))
    out = Path(args.out)
    # Four files: on a failure (a full disk) remove the ones this run made, and its folder.
    new = [p for p in (out, *(out / n for n in CLEAN_OUTPUTS)) if not p.exists()]
    try:
        result = clean_dataset(
            ds, args.out, threshold=_arg(args, "threshold"),
            outlier_min=_arg(args, "outlier_min"), fractions=fractions,
            seed=_arg(args, "seed", 0), jobs=_arg(args, "jobs"), medmnist_split=medmnist,
        )
        write_cleaned(out / "cleaned.npz", ds, result.splits)
    except BaseException:
        for p in reversed(new):
            with contextlib.suppress(OSError):
                if p == out:
                    p.rmdir()  # only if empty
                else:
                    p.unlink(missing_ok=True)
        raise
    if result.scan is not None:
        _print_scan(result.scan)
    sizes = ", ".join(f"{s} {len(result.splits[s])}" for s in SPLITS)
    print(f"split ({'official' if medmnist else 'seed ' + str(_arg(args, 'seed', 0))}): {sizes}")
    print(f"wrote {out}/scan.json, scan.png, split.json, cleaned.npz", file=sys.stderr)
    return 0
