"""``frozenaug-train evaluate``: accuracy, macro F1, per-class metrics, confusion matrix, and
optionally a robustness table: one distortion family at a time (trainer/assess/distort.py) and
the headline, compound distortions of 2-5 families per image (trainer/assess/compound.py).

Also home of what evaluate and predict share: reading an input (a build directory's split, an
.npz, or a class folder) at the run's size; opening a run folder, or several as an ensemble, is
trainer/assess/runs.py.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frozenaug import format as fmt
from frozenaug.common.atomic import write_together
from frozenaug.common.errors import InputError
from frozenaug.common.owned import check_not_input
from frozenaug.common.text import drawable
from frozenaug.trainer.assess import compound as compound_module
from frozenaug.trainer.assess import tta as tta_module
from frozenaug.trainer.assess.distort import FAMILIES, MAX_SEVERITY, distort
from frozenaug.trainer.assess.runs import (  # noqa: F401  (evaluate's names, kept)
    Run,
    as_run_dirs,
    load_run,
    load_runs,
    read_run_files,
)


@dataclass
class Inputs:
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray | None  # int (N,), or None when the input has none
    ids: list[str]
    source: str


def load_inputs(run: Run, path: str | os.PathLike | None, split: str = "test",
                max_pixels: int | None = None) -> Inputs:
    """A build directory's split (default: the run's own build), an .npz or a class folder.

    Build-directory ids are ``<split>/<source index>`` (the sample's row in the builder's input
    data set); .npz and folder ids are the intake's (folder: relative paths).
    """
    if path is None:
        path = run.config.build_dir
    p = Path(path)
    if (p / fmt.MANIFEST_NAME).is_file():
        from frozenaug.trainer.read.stream import ShardStream

        m = fmt.load_manifest(p)
        _check_names(m.root / fmt.MANIFEST_NAME, m.class_names, run.class_names)
        if tuple(m.image_shape) != run.image_shape:
            raise InputError(f"{p}: images are {tuple(m.image_shape)}, the run's model takes "
                             f"{run.image_shape}")
        if not m.shards_of(split):
            raise InputError(f"{p}: the build has no {split} split")
        # No validate pass: iter_numpy opens (and checks) every shard before reading any.
        stream = ShardStream(m, split, batch_size=256, shuffle=False, validate=False)
        images = np.concatenate([x for x, _ in stream.iter_numpy()])
        ids = [f"{split}/{i}" for i in stream.source_index()]
        return Inputs(images, stream.labels().astype(np.int64), ids, f"{p} ({split})")
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    from frozenaug.common.imageheaders import DEFAULT_MAX_IMAGE_PIXELS
    from frozenaug.data.intake import load_dataset

    size = run.image_shape[:2]
    limit = {"max_pixels": max_pixels or DEFAULT_MAX_IMAGE_PIXELS}
    if p.is_dir():  # a folder per class: the same names as the run's, read in the run's order
        folders = sorted(c.name for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
        if not folders:
            raise InputError(f"{p}: no class sub-folders; expected one folder per class, "
                             f"named {', '.join(run.class_names)}")
        if set(folders) != set(run.class_names):
            _check_names(p, folders, run.class_names)
        ds = load_dataset(p, size=size, class_names=run.class_names, **limit)
    else:
        ds = load_dataset(p, size=size, max_classes=len(run.class_names), **limit)
        names = list(ds.class_names)
        unnamed = names == [str(i) for i in range(len(names))]  # an npz without class_names
        if not (unnamed and len(names) <= len(run.class_names)):
            _check_names(p, names, run.class_names)
    ids = [str(i) for i in ds.ids]
    return Inputs(np.asarray(ds.images), np.asarray(ds.labels, np.int64), ids, str(p))


def _check_names(where: Any, got: list[str], want: list[str]) -> None:
    if list(got) != list(want):
        raise InputError(f"{where}: class names {got} differ from the run's {want}")




# --- metrics ------------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]``: how many samples of true class t were predicted as p."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0
                        or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1 (a 0/0 ratio counts as 0).

    Macro F1 averages over the classes present in the truth or the predictions, as
    scikit-learn does when not given the label set, so a class missing from a small test set
    does not count as a failure.
    """
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support > 0) | (predicted > 0)
    total = int(cm.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "samples": total,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def score(labels: np.ndarray, proba: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    cm = confusion_matrix(labels, proba.argmax(axis=1), len(class_names))
    return metrics_from_confusion(cm, class_names)


def confusion_png(cm: np.ndarray, class_names: list[str], title: str) -> bytes:
    """The confusion matrix drawn as PNG bytes (written together with metrics.json)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)  # colour: share of the true class
    for (t, p), v in np.ndenumerate(cm):
        ax.text(p, t, str(v), ha="center", va="center",
                color="white" if v / rows[t, 0] > 0.5 else "black", fontsize=8)
    names = [drawable(c) for c in class_names]  # printable, whatever the folder names were
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# --- the command --------------------------------------------------------------------------


def robustness(run: Run, inputs: Inputs, severities: int | Sequence[int], seed: int,
               batch_size: int, tta: bool | str = False, adapt_bn: bool = False,
               families: Sequence[str] = tuple(FAMILIES), compound: bool = True
               ) -> dict[str, Any]:
    """Accuracy and macro F1 under each distortion family at severities 1..``severities`` (or
    those listed), and with ``compound`` under the compound suite (``compound_robustness``);
    with ``adapt_bn`` the BatchNorm statistics are adapted to each distorted set."""
    from tqdm import tqdm

    levels = range(1, severities + 1) if isinstance(severities, int) else list(severities)
    table: dict[str, dict[str, dict[str, float]]] = {}
    jobs = [(f, s) for f in families for s in levels]
    for family, sev in tqdm(jobs, desc="distortions", file=sys.stderr, disable=None):
        proba = tta_module.predict_proba(run.model, distort(inputs.images, family, sev, seed),
                                         batch_size, tta, adapt_bn)
        m = score(inputs.labels, proba, run.class_names)
        table.setdefault(family, {})[str(sev)] = {"accuracy": m["accuracy"],
                                                  "macro_f1": m["macro_f1"]}
    accs = [v["accuracy"] for fam in table.values() for v in fam.values()]
    out = {"seed": seed, "severities": list(levels), "results": table,
           "mean_accuracy": float(np.mean(accs)) if accs else 0.0}
    if compound:
        out["compound"] = compound_robustness(run, inputs, seed, batch_size, tta, adapt_bn)
    return out


def compound_robustness(run: Run, inputs: Inputs, seed: int, batch_size: int,
                        tta: bool | str = False, adapt_bn: bool = False) -> dict[str, Any]:
    """Accuracy and macro F1 under the compound suite (every image its own composition of
    2-5 families at severity 3-5), with the accuracy on the images that include each family
    and by the number of families; ``adapt_bn`` adapts to the whole compound set."""
    images, recipes = compound_module.compound(inputs.images, seed)
    proba = tta_module.predict_proba(run.model, images, batch_size, tta, adapt_bn)
    m = score(inputs.labels, proba, run.class_names)
    correct = proba.argmax(axis=1) == inputs.labels
    return {"seed": seed, **compound_module.describe(), "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"], "samples": m["samples"],
            **compound_module.breakdown(correct, recipes)}


def format_robustness(clean: float, rob: dict[str, Any]) -> str:
    sev = rob["severities"]
    if not rob["results"]:  # --compound-only
        return compound_module.format_compound(rob["compound"]) if "compound" in rob else ""
    lines = [f"{'accuracy':<12}" + "".join(f"{'sev ' + str(s):>8}" for s in sev),
             f"{'clean':<12}" + f"{clean:>8.3f}" * len(sev)]
    for family, row in rob["results"].items():
        lines.append(f"{family:<12}" + "".join(f"{row[str(s)]['accuracy']:>8.3f}" for s in sev))
    lines.append(f"mean over distortions: {rob['mean_accuracy']:.3f}")
    if "compound" in rob:
        lines.append(compound_module.format_compound(rob["compound"]))
    return "\n".join(lines)


def evaluate(run_dir: str | os.PathLike | Sequence[str | os.PathLike], input_path: str | None,
             out: str | os.PathLike, *,
             split: str = "test", distort_: bool = False, severities: int = 3, seed: int = 0,
             batch_size: int = 64, tta: bool | str = False, adapt_bn: bool = False,
             max_pixels: int | None = None, compound_only: bool = False) -> dict[str, Any]:
    """Evaluate a run (or several, an ensemble: assess.runs) on an input; write
    ``out/metrics.json`` and ``out/confusion.png``.

    ``tta`` averages over the 8 dihedral views, ``adapt_bn`` recomputes BatchNorm statistics
    on the evaluated images first (trainer/assess/tta.py); the run's files are never changed."""
    if not 1 <= severities <= MAX_SEVERITY:
        raise InputError(f"--severities: must be 1..{MAX_SEVERITY}, got {severities}")
    if batch_size < 1:
        raise InputError(f"--batch-size: must be >= 1, got {batch_size}")
    for name in ("metrics.json", "confusion.png"):  # never replace the input with a report
        check_not_input(Path(out) / name, [input_path], "writing there", inside_ok=True)
    run_dirs = as_run_dirs(run_dir)
    run = load_runs(run_dirs)
    inputs = load_inputs(run, input_path, split, max_pixels)
    if inputs.labels is None:
        raise InputError(f"{inputs.source}: has no labels to evaluate against (use predict)")
    if not len(inputs.labels):
        raise InputError(f"{inputs.source}: no images")
    proba, cost = tta_module.predict_proba_timed(run.model, inputs.images, batch_size, tta,
                                                 adapt_bn)
    metrics = {"run": str(run.path), "runs": [str(Path(r)) for r in run_dirs],
               "input": inputs.source, "tta": bool(tta), "tta_views": cost.views,
               "adapt_bn": adapt_bn,
               "cost": {"views": cost.views, "plain_s": cost.plain_s, "total_s": cost.total_s,
                        "adapt_s": cost.adapt_s, "models": cost.models},
               **score(inputs.labels, proba, run.class_names)}
    if distort_:
        metrics["robustness"] = robustness(run, inputs, severities, seed, batch_size, tta,
                                           adapt_bn, families=() if compound_only else FAMILIES)
    out = Path(out)
    what = run.config.model + (f" x{len(run_dirs)} (ensemble)" if len(run_dirs) > 1 else "")
    title = (f"{what}: accuracy {metrics['accuracy']:.3f}, "
             f"macro F1 {metrics['macro_f1']:.3f}")
    compound = metrics.get("robustness", {}).get("compound")
    if compound:  # the headline robustness number goes on the picture too
        title += f"\ncompound distortions: accuracy {compound['accuracy']:.3f}"
    png = confusion_png(np.array(metrics["confusion_matrix"]), run.class_names, title)
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    # Together or not at all: a full disk leaves neither file (nor a new empty folder).
    write_together({out / "metrics.json": text.encode(), out / "confusion.png": png})
    return metrics
