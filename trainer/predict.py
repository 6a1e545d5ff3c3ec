"""``frozenaug-train predict``: one CSV row per image: id, predicted class, class probabilities.

Labelled inputs are read as evaluate reads them (trainer.evaluate.load_inputs): a build
directory's split (ids ``<split>/<source index>``), an .npz, or a class folder (ids: relative
paths). Unlabelled images, the usual thing to predict, come as a flat folder of image files
(ids: file names) or an .npz holding ``images`` and no ``labels`` (ids: row numbers).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np

from builder.atomic import atomic_path
from builder.errors import InputError
from builder.intake import IMAGE_EXTENSIONS, read_image
from trainer.evaluate import load_inputs, load_run, predict_proba


def load_unlabelled(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, list[str]] | None:
    """Images of a flat folder, or of an .npz without ``labels``; None for any other input."""
    if path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
        files = sorted(p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS
                       and not p.is_dir())
        if not files or any(p.is_dir() for p in entries):
            return None
        images = np.empty((len(files), *size, 3), np.uint8)
        for i, f in enumerate(files):
            img = read_image(f, size)
            if img is None:
                raise InputError(f"{f}: unreadable image")
            images[i] = img
        return images, [f.name for f in files]
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files or "labels" in z.files:
                return None
            raw = z["images"]
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable npz ({type(e).__name__})") from None
    if raw.ndim not in (3, 4) or raw.dtype.kind not in "uf" or not np.isfinite(raw).all():
        raise InputError(f"{path}: images: expected finite (N,H,W[,3]) pixels, "
                         f"got {raw.shape} {raw.dtype}")
    if raw.dtype.kind == "f":  # [0, 1] or [0, 255], as the intake reads them
        raw = np.rint(raw * 255.0 if raw.max(initial=0) <= 1.0 else raw)
    raw = np.clip(raw, 0, 255).astype(np.uint8, copy=False)
    if raw.ndim == 3:
        raw = raw[..., None]
    images = np.empty((len(raw), *size, 3), np.uint8)
    for i, img in enumerate(raw):
        img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
        images[i] = img if img.shape[:2] == size else cv2.resize(
            img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return images, [str(i) for i in range(len(raw))]


def write_predictions(path: str | os.PathLike, ids: list[str], proba: np.ndarray,
                      class_names: list[str]) -> None:
    """Columns ``id, class, <one per class name>``; written atomically."""
    if len(ids) != len(proba):
        raise ValueError("ids and probabilities differ in length")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "class", *class_names])
        for i, p in zip(ids, proba, strict=True):
            w.writerow([i, class_names[int(np.argmax(p))], *(f"{v:.6f}" for v in p)])


def predict(run_dir: str | os.PathLike, input_path: str, out: str | os.PathLike, *,
            split: str = "test", batch_size: int = 64) -> int:
    """Predict every image of ``input_path``; return how many rows were written."""
    if batch_size < 1:
        raise InputError(f"--batch-size: must be >= 1, got {batch_size}")
    if Path(out).is_dir():
        raise InputError(f"{out}: is a folder; --out names the CSV file to write")
    run = load_run(run_dir)
    unlabelled = load_unlabelled(Path(input_path), tuple(run.image_shape[:2]))
    if unlabelled is not None:
        images, ids = unlabelled
    else:
        inputs = load_inputs(run, input_path, split)
        images, ids = inputs.images, inputs.ids
    proba = predict_proba(run.model, images, batch_size)
    write_predictions(out, ids, proba, run.class_names)
    return len(ids)


def cmd_predict(args) -> int:
    n = predict(args.run, args.input, args.out, split=args.split,
                batch_size=64 if args.batch_size is None else args.batch_size)
    print(f"{args.out}: {n} predictions")
    return 0
