"""``frozenaug-build preview``: a PNG grid of input images beside their frozen augmented versions.

One row per sample (the first ``--n`` of frozen epoch 0); column 0 is the original from the
input data set (found through ``source_index``), columns 1..K its versions in each frozen epoch,
titled with the label, or the label mass of a mixed sample. Every shard is checked against the
manifest (``frozenaug.format.manifest.open_shard``) before it is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from frozenaug import format as fmt
from frozenaug.common.atomic import atomic_path
from frozenaug.common.errors import InputError
from frozenaug.common.owned import check_not_input

Sample = tuple[np.ndarray, int, np.ndarray | None]  # image, label, soft labels or None


def _samples(m: fmt.Manifest, shard: fmt.ShardEntry, f: h5py.File,
             positions: list[int]) -> list[Sample]:
    from frozenaug.format.codec import shard_images

    soft = f.get(fmt.DS_SOFT_LABELS)
    try:
        images = shard_images(f, positions, m.encoding_of(shard), tuple(m.image_shape))
    except ValueError as e:  # a corrupt encoded image
        raise InputError(f"{m.path_of(shard)}: {e}") from None
    return [(image, int(f[fmt.DS_LABELS][p]), None if soft is None else soft[p])
            for image, p in zip(images, positions, strict=True)]


def first_samples(m: fmt.Manifest, n: int) -> tuple[list[int], list[Sample]]:
    """Source rows and samples of the first ``n`` training samples of frozen epoch 0."""
    rows: list[int] = []
    samples: list[Sample] = []
    for shard in m.shards_of("train", 0):
        with fmt.open_shard(m, shard) as f:
            take = list(range(min(n - len(rows), shard.samples)))
            rows += [int(r) for r in f[fmt.DS_SOURCE_INDEX][: len(take)]]
            samples += _samples(m, shard, f, take)
        if len(rows) == n:
            break
    return rows, samples


def samples_of_epoch(m: fmt.Manifest, epoch: int, rows: list[int]) -> list[Sample | None]:
    """The sample built from each input row in one frozen epoch (None if it is not there)."""
    found: dict[int, Sample] = {}
    wanted = set(rows)
    for shard in m.shards_of("train", epoch):
        with fmt.open_shard(m, shard) as f:
            src = f[fmt.DS_SOURCE_INDEX][()]
            hits = [p for p, r in enumerate(src) if int(r) in wanted and int(r) not in found]
            for p, sample in zip(hits, _samples(m, shard, f, hits), strict=True):
                found[int(src[p])] = sample
    return [found.get(r) for r in rows]


def _title(names: list[str], label: int, soft: np.ndarray | None) -> str:
    if soft is None or soft[label] >= 0.999:
        return names[label]
    top = np.argsort(-soft, kind="stable")[:2]
    # one line per class: two long class names side by side overflow the column
    return "\n".join(f"{names[c]} {soft[c]:.2f}" for c in top if soft[c] > 0)


def _load_originals(m: fmt.Manifest, input_path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The input's images and labels, refusing a data set other than the one built from."""
    from frozenaug.data.intake import fingerprint, load_dataset

    inp = m.raw.get("input") or {}
    cfg = m.raw.get("config") or {}
    path = input_path or inp.get("path")
    if not path or not Path(path).exists():
        raise InputError(f"{path}: the build's input is not there; pass --input PATH")
    ds = load_dataset(path, size=tuple(m.image_shape[:2]), class_names=cfg.get("classes"),
                      strict=bool(cfg.get("strict", False)),
                      medmnist_split=bool(cfg.get("medmnist_split", False)))
    if inp.get("fingerprint") and fingerprint(ds) != inp["fingerprint"]:
        raise InputError(f"{path}: not the input this build was made from (fingerprint differs "
                         "from the manifest's); pass --input with the original")
    return ds.images, ds.labels


def cmd_preview(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise InputError(f"--n: must be an integer >= 1, got {args.n}")
    m = fmt.load_manifest(args.dir)
    check_not_input(args.out, [m.root / fmt.MANIFEST_NAME, *(m.root / s for s in fmt.SPLITS),
                               args.input], "writing the PNG there")
    originals, original_labels = _load_originals(m, args.input)
    rows, first = first_samples(m, args.n)
    if not rows:
        raise InputError(f"{m.root}: the build has no training samples to preview")
    columns = [first] + [samples_of_epoch(m, e, rows) for e in range(1, m.epochs)]
    names = m.class_names

    fig = Figure(figsize=(1.8 * (1 + len(columns)), 1.95 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1 + len(columns), squeeze=False)
    for i, row in enumerate(rows):
        axes[i, 0].imshow(originals[row])
        axes[i, 0].set_title(f"input #{row}\n{names[int(original_labels[row])]}", fontsize=7)
        for j, col in enumerate(columns, start=1):
            if col[i] is not None:
                image, label, soft = col[i]
                axes[i, j].imshow(image)
                axes[i, j].set_title(f"epoch {j - 1}: {_title(names, label, soft)}", fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png")
    print(f"wrote {args.out}: {len(rows)} samples x (input + {len(columns)} frozen epochs)")
    return 0
