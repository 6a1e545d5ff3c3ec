"""``frozenaug-train predict``: one CSV row per image: id, predicted class, class probabilities.

Labelled inputs are read as evaluate reads them (assess.evaluate.load_inputs): a build
directory's split (ids ``<split>/<source index>``), an .npz, or a class folder (ids: relative
paths). Unlabelled images, the usual thing to predict, come as a flat folder of image files
(ids: file names) or an .npz holding ``images`` and no ``labels`` (ids: row numbers).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from frozenaug.common.atomic import atomic_path
from frozenaug.common.csvsafe import safe_cell
from frozenaug.common.errors import InputError
from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
from frozenaug.common.owned import check_not_input
from frozenaug.data.intake import load_unlabelled
from frozenaug.trainer.assess.evaluate import load_inputs
from frozenaug.trainer.assess.runs import as_run_dirs, load_runs, member_files
from frozenaug.trainer.assess.tta import predict_proba_timed


def write_predictions(path: str | os.PathLike, ids: list[str], proba: np.ndarray,
                      class_names: list[str]) -> None:
    """Columns ``id, class, <one per class name>``; written atomically. Text cells that a
    spreadsheet would evaluate (``=``, ``+``, ``-``, ``@``, tab, CR first) get a leading ``'``
    (frozenaug.common.csvsafe)."""
    if len(ids) != len(proba):
        raise ValueError("ids and probabilities differ in length")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        # csv quotes only what holds "\n" (the line end): a CR inside a name would split its
        # row for every reader, so such rows are written fully quoted
        cr = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
        names = [safe_cell(c) for c in class_names]  # no cell a spreadsheet would run
        (cr if any("\r" in c for c in names) else w).writerow(["id", "class", *names])
        for i, p in zip(ids, proba, strict=True):
            cell = safe_cell(i)
            (cr if "\r" in cell else w).writerow(
                [cell, names[int(np.argmax(p))], *(f"{v:.6f}" for v in p)])


def predict(run_dir: str | os.PathLike | Sequence[str | os.PathLike], input_path: str,
            out: str | os.PathLike, *,
            split: str = "test", batch_size: int = 64, tta: bool | str = False,
            adapt_bn: bool = False, report: Callable[[str], None] | None = None,
            max_pixels: int | None = None) -> int:
    """Predict every image of ``input_path`` with a run (or the mean of several, an ensemble:
    assess.runs); return how many rows were written.

    ``tta``/``adapt_bn`` as in trainer/assess/tta.py (adapt_bn adapts to these very images; the
    run's files are never changed); ``report`` receives a line saying what they cost."""
    if batch_size < 1:
        raise InputError(f"--batch-size: must be >= 1, got {batch_size}")
    if Path(out).is_dir():
        raise InputError(f"{out}: is a folder; --out names the CSV file to write")
    run_dirs = as_run_dirs(run_dir)
    check_not_input(out, [input_path, *member_files(run_dirs)], "writing the CSV there",
                    inside_ok=True)
    run = load_runs(run_dirs)
    unlabelled = load_unlabelled(Path(input_path), tuple(run.image_shape[:2]),
                                 max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    if unlabelled is not None:
        images, ids = unlabelled
    else:
        inputs = load_inputs(run, input_path, split, max_pixels)
        images, ids = inputs.images, inputs.ids
    proba, cost = predict_proba_timed(run.model, images, batch_size, tta, adapt_bn)
    write_predictions(out, ids, proba, run.class_names)
    if report is not None and cost.describe():
        report(cost.describe())
    return len(ids)
