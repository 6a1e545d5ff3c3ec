"""``frozenaug-train fit``: a coarse phase (backbone frozen), then fine-tuning, resumable.

Phases. Coarse: the backbone is frozen and the head trains with L2 (``head_l2``) at ``lr``.
Fine: the model is rebuilt with L1L2 (``fine_l1``, ``fine_l2``) on the head, the coarse weights
are copied in, the top ``unfreeze`` backbone layers train (BatchNorm layers stay frozen, and the
backbone always runs in inference mode) at ``fine_lr``. For ``simple_cnn`` both phases train the
whole small net; the fine phase only lowers the LR and switches the head's regulariser. Keras
epochs are numbered across both phases (the fine phase starts where the coarse one stopped), so
the stream reads frozen epoch ``e mod K`` and ``history.csv`` is one table with a ``phase``
column. Each phase has its own EarlyStopping (best weights restored) and ReduceLROnPlateau on
val loss.

Starting. Everything that can fail on bad input (the config, the build and its shards, with
``--verify`` their sha256, the model and its weights) is checked before fit writes anything, so
a failed start leaves no run folder, or an existing one untouched. A resume (and
``--overwrite``) first deletes the ``.tmp-*`` files a kill left in RUN and RUN/checkpoints.

Resuming. After every epoch a checkpoint (model and optimizer, best weights, ``state.json``,
``history.csv``; see trainer/checkpoint.py) is written so that ``--resume`` continues after the
last completed epoch with the same counters, and the history has the length of an uninterrupted
run.

Several GPUs. ``--strategy mirrored`` builds, compiles and trains under
``tf.distribute.MirroredStrategy`` over all visible GPUs (R replicas, recorded as ``replicas``
in ``run.json``). ``--batch-size`` is per replica: the stream reads global batches of
``batch_size x R`` images (``global_batch_size`` in run.json), each replica gets ``batch_size``
of them, and the gradients are averaged over the global batch. With R > 1 every training step
takes exactly one global batch, so each epoch leaves out its last ``n_train mod (batch_size x
R)`` images (another set each epoch, as the stream shuffles); a replica never gets an empty or
uneven batch. Validation still sees every image, in batches of at most the global size, a
multiple of R, chosen so that no replica's share is empty (``val_batch_size`` in run.json).
BatchNorm layers that train (simple_cnn's) synchronise their batch statistics across replicas,
so all replicas, and the saved model, hold the same moving statistics.

Learning rate. ``--lr`` and ``--fine-lr`` are used as given, whatever R is. To move a run tuned
on one device to R replicas, either keep its global batch (divide ``--batch-size`` by R) and its
learning rates: the same optimisation, only faster; or keep the per-replica batch, which makes
the global batch R times larger, and raise the learning rates with it: linearly (lr x R, Goyal
et al. 2017, with a warm-up over the first epochs for large R) is the rule for SGD; for Adam,
which fit uses, the square-root rule (lr x sqrt(R), Malladi et al. 2022) is the safer start.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from builder.atomic import TMP_PREFIX, remove_stale_temporaries, write_json
from builder.errors import InputError
from builder.format import load_manifest
from builder.owned import FIT_OWN, fit_inputs, removable, remove
from builder.shards import check_free_space
from trainer import checkpoint as ckpt
from trainer import config as cfgmod
from trainer import models
from trainer.config import MODEL_NAME, RUN_INFO_NAME, STATE_NAME

# What fit writes into a run directory; --overwrite removes only these.
RUN_FILES = (cfgmod.CONFIG_NAME, STATE_NAME, RUN_INFO_NAME, MODEL_NAME, ckpt.HISTORY_NAME,
             ckpt.CURVES_NAME, ckpt.CHECKPOINT_DIR, "tb")


def _gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _tristate(value: str, gpu: bool) -> bool:
    return gpu if value == "auto" else value == "on"


def check_run_dir(run: Path, cfg: cfgmod.FitConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run continues only with --resume and the same config.

    Only reads: fit calls it before anything can fail, and writes (``prepare_run_dir``) after.
    """
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder")
    classes = load_manifest(cfg.build_dir).num_classes
    if classes < 2:  # a softmax over one class learns nothing, and the stream's labels break
        raise InputError(f"{cfg.build_dir}: the build has {classes} class; a classifier needs "
                         "at least 2 (build from data with two or more classes)")
    # A full disk is refused now, not by HDF5 mid-epoch (which can crash the process): a run
    # holds ~6 float32 copies of the parameters (model, checkpoint + Adam slots, best, coarse).
    existing = next(p for p in (run.absolute(), *run.absolute().parents) if p.exists())
    params = {"simple_cnn": 2e6, "efficientnetv2b0": 7e6, "efficientnetv2b3": 14e6,
              "convnext_tiny": 29e6, "convnext_small": 50e6}.get(cfg.model, 89e6)
    if existing.is_dir():
        check_free_space(existing, int(params * 4 * 6), str(run))
    if not run.is_dir():
        return
    cfg_path = run / cfgmod.CONFIG_NAME
    if cfg_path.is_file() and not overwrite:
        stored = cfgmod.load_run_config(run)
        diff = cfgmod.config_differences(stored, cfg)
        if diff:
            raise InputError(
                f"{run}: holds a run of another config (differs in {', '.join(diff)}); "
                "repeat the run's own settings, or pass --overwrite to replace it"
            )
        if not resume:
            raise InputError(
                f"{run}: holds a run of this config already; pass --resume to continue it "
                "or --overwrite to start again"
            )
        return
    if overwrite:  # only fit's own files, never the build, the weights or someone's folder
        removable(run, RUN_FILES, FIT_OWN, fit_inputs(cfg.build_dir, cfg.weights))
    # What would be left: --overwrite removes fit's own files; a kill's temporaries never count.
    others = [p.name for p in run.iterdir() if not p.name.startswith(TMP_PREFIX)
              and not (overwrite and p.name in RUN_FILES)]
    if others:
        raise InputError(
            f"{run}: not empty and not a frozenaug-train run (no {cfgmod.CONFIG_NAME}); "
            "choose a new folder or pass --overwrite"
        )


def prepare_run_dir(run: Path, cfg: cfgmod.FitConfig, *, overwrite: bool) -> None:
    """Make (or clear, with --overwrite) the run folder checked by ``check_run_dir``.

    Also deletes the ``.tmp-*`` files that a kill during an atomic write left in RUN and
    RUN/checkpoints; nothing else writes there while fit runs.
    """
    if overwrite:
        remove(removable(run, RUN_FILES, FIT_OWN, fit_inputs(cfg.build_dir, cfg.weights)))
    for folder in (run, run / ckpt.CHECKPOINT_DIR):
        remove_stale_temporaries(folder)
    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / cfgmod.CONFIG_NAME
    wanted, stored = cfg.to_dict(), None
    if cfg_path.is_file():  # a resume (checked: same config): record changed check keys only
        stored = json.loads(cfg_path.read_text())
        wanted = {**stored, **{k: wanted[k] for k in cfgmod.CHECK_KEYS}}
    if wanted != stored:
        write_json(cfg_path, wanted)
    (run / ckpt.CHECKPOINT_DIR).mkdir(exist_ok=True)


def class_weights(counts: list[int]) -> dict[int, float]:
    """Balanced weights n / (C * n_c); a class absent from train gets 1 (it never occurs)."""
    n, c = sum(counts), len(counts)
    return {i: (n / (c * k) if k else 1.0) for i, k in enumerate(counts)}


def _build(cfg: cfgmod.FitConfig, phase: str, shape, num_classes: int, weights: str):
    reg = (models.head_regularizer(0.0, cfg.head_l2) if phase == "coarse"
           else models.head_regularizer(cfg.fine_l1, cfg.fine_l2))
    return models.build_model(
        cfg.model, shape, num_classes, weights=weights, head_units=cfg.head_units,
        dropout=cfg.dropout, head_regularizer=reg, output_l2=cfg.output_l2, seed=cfg.seed,
    )


def _sync_batchnorm(model: keras.Model) -> None:
    """Make BatchNormalization average its batch statistics over all replicas.

    Keras 3 keeps each replica's moving mean and variance apart (their variables aggregate
    "none"), so unsynchronised replicas drift apart, validate with different statistics, and
    the saved model holds replica 0's. Synchronised, every replica applies the same update,
    that of the global batch, as one device would. (Frozen backbone BatchNorm never updates.)
    """
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
        elif isinstance(layer, keras.Model):
            stack.extend(layer.layers)


def _compile(model: keras.Model, optimizer: keras.optimizers.Optimizer, jit: bool,
             eager: bool = False) -> None:
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:  # fit compiles under its scope
        _sync_batchnorm(model)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit and not eager, run_eagerly=eager)


def distributed_batches(n_train: int, n_val: int, batch_size: int,
                        replicas: int) -> tuple[int, bool, int]:
    """(global batch, drop the train remainder, val batch size) for ``replicas`` replicas.

    tf.distribute cuts each global batch into one share per replica. A share may not be empty
    (Conv2D fails on an empty batch on CPU, and a BatchNorm mean over no images is undefined),
    and Keras (3.15) reduces the first validation batch across replicas, which fails unless
    it splits evenly. So with R > 1 training drops each epoch's last partial batch, and
    validation uses the largest multiple of R, at most the global batch, whose last batch is
    empty or has at least R images (every sample is still validated exactly once).
    """
    global_batch = batch_size * replicas
    if replicas == 1:
        return global_batch, False, global_batch
    if n_train < global_batch:
        raise InputError(
            f"--batch-size {batch_size}: {replicas} replicas need at least {global_batch} "
            f"train images (batch size x replicas), the build has {n_train}"
        )
    if n_val == 0:  # no val split
        return global_batch, True, global_batch
    for b in range(global_batch, 0, -replicas):
        if b <= n_val and (n_val % b == 0 or n_val % b >= replicas):
            return global_batch, True, b
    raise InputError(
        f"--strategy mirrored: the val split's {n_val} images cannot be shared among "
        f"{replicas} replicas without an empty share; build with a larger val split or use "
        "--strategy default"
    )


def fit(
    cfg: cfgmod.FitConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int | None = None,
    extra_callbacks: list[keras.callbacks.Callback] | tuple = (),
    eager: bool = False,
) -> dict[str, Any]:
    """Train (or continue) the run in ``out``; return a summary (epochs, final val metrics).

    ``extra_callbacks`` run after the checkpoint of each epoch; ``eager`` skips tf.function
    tracing, which is faster for the few steps of a test and much slower for real data.
    """
    # Everything that can fail on bad input (config, build, shards, model and its weights)
    # runs before the first write, so a failed start leaves no run folder, or an untouched one.
    cfg.validate()
    models.check_model_name(cfg.model)
    manifest = load_manifest(cfg.build_dir)
    run = Path(out)
    check_run_dir(run, cfg, resume=resume, overwrite=overwrite)
    state = ckpt.new_state() if overwrite else ckpt.load_state(run)
    if state["phase"] == "done":
        print(f"{run}: training already finished; nothing to resume", file=sys.stderr)
        return {"epochs": len(state["history"]), "history": state["history"], "resumed": True}

    from trainer.stream import ShardStream  # the reader; imported late so --help stays fast

    gpu = _gpu_present()
    mixed, jit = _tristate(cfg.mixed_precision, gpu), _tristate(cfg.xla, gpu)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(cfg.seed + len(state["history"]))
    strategy = (tf.distribute.MirroredStrategy() if cfg.strategy == "mirrored"
                else tf.distribute.get_strategy())
    replicas = strategy.num_replicas_in_sync
    has_val = bool(manifest.shards_of("val"))
    global_batch, drop, val_batch = distributed_batches(
        sum(manifest.class_counts("train")), sum(manifest.class_counts("val")),
        cfg.batch_size, replicas)
    train = ShardStream(manifest, "train", batch_size=global_batch, shuffle=True, seed=cfg.seed,
                        drop_remainder=drop, verify=cfg.verify)
    val = (ShardStream(manifest, "val", batch_size=val_batch, shuffle=False,
                       verify=cfg.verify) if has_val else None)
    monitor = "val_loss" if has_val else "loss"
    shape = tuple(manifest.image_shape)
    weights_cls = class_weights(manifest.class_counts("train")) if cfg.class_weights else None
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    coarse_final, best = run / ckpt.COARSE_FINAL, run / ckpt.BEST_WEIGHTS

    def run_phase(model: keras.Model, phase: str, end_epoch: int) -> None:
        start = state["epoch"] + 1
        patience_lr = max(1, cfg.patience // 2)
        es = ckpt.ResumableEarlyStopping(state.get("early_stopping"), monitor=monitor,
                                         patience=max(cfg.patience, 1),
                                         restore_best_weights=True)
        if state.get("early_stopping") and best.is_file():
            es.initial_best_weights = ckpt.weights_from_file(model, best)
        rlr = ckpt.ResumableReduceLR(state.get("reduce_lr"), monitor=monitor,
                                     factor=cfg.lr_factor, patience=patience_lr,
                                     min_lr=cfg.min_lr)
        ck = ckpt.RunCheckpoint(run, state, phase, es, rlr)
        callbacks = [es, rlr, ck, *tensorboard, *extra_callbacks]
        if start < end_epoch and not state.get("stopped"):
            model.fit(
                train.dataset(initial_epoch=start, repeat=True),
                steps_per_epoch=train.steps_per_epoch,
                validation_data=val.dataset() if val is not None else None,
                initial_epoch=start, epochs=end_epoch, class_weight=weights_cls,
                callbacks=callbacks, verbose=verbose, shuffle=False,  # the stream shuffles
            )
        elif es.initial_best_weights is not None:
            model.set_weights(es.initial_best_weights)  # what EarlyStopping would have restored

    def fine_model() -> keras.Model:
        if state["checkpoint"]:
            return _load_checkpoint(run / state["checkpoint"], jit, eager)
        model = _build(cfg, "fine", shape, manifest.num_classes, "none")
        model.load_weights(coarse_final)
        models.set_trainable(model, "fine", cfg.unfreeze)
        _compile(model, keras.optimizers.Adam(cfg.fine_lr), jit, eager)
        return model

    with strategy.scope():
        # The model this start trains first, built (or loaded) before anything is written.
        if state["phase"] == "fine":
            model = fine_model()
        elif state["checkpoint"]:
            model = _load_checkpoint(run / state["checkpoint"], jit, eager)
        else:
            model = _build(cfg, "coarse", shape, manifest.num_classes, cfg.weights)
            models.set_trainable(model, "coarse", cfg.unfreeze)
            _compile(model, keras.optimizers.Adam(cfg.lr), jit, eager)

        prepare_run_dir(run, cfg, overwrite=overwrite)
        write_json(run / RUN_INFO_NAME, {
            "class_names": manifest.class_names, "image_shape": list(shape),
            "build_dir": str(Path(cfg.build_dir).resolve()), "replicas": replicas,
            "global_batch_size": global_batch, "steps_per_epoch": train.steps_per_epoch,
            "val_batch_size": val_batch if val else 0, "mixed_precision": mixed, "xla": jit,
            "gpu": gpu, "train_samples": train.num_samples,
            "val_samples": val.num_samples if val else 0,
        })
        tensorboard = _tensorboard(run / "tb")

        if state["phase"] == "coarse":
            run_phase(model, "coarse", cfg.epochs_coarse)
            ckpt.save_atomic(coarse_final, model.save_weights)
            state.update(phase="fine", fine_start=state["epoch"] + 1, checkpoint=None,
                         early_stopping=None, reduce_lr=None, stopped=False)
            best.unlink(missing_ok=True)
            ckpt.save_state(run, state)
            model = fine_model()
        fine_end = state["fine_start"] + cfg.epochs_fine
        if cfg.epochs_fine:
            run_phase(model, "fine", fine_end)
        ckpt.save_atomic(run / MODEL_NAME, model.save)
    ckpt.write_curves(run / ckpt.CURVES_NAME, state["history"], state["fine_start"])
    state.update(phase="done")
    ckpt.save_state(run, state)
    ckpt.remove_epoch_checkpoints(run)  # the final model replaces them; keep weights files
    last = state["history"][-1] if state["history"] else {}
    return {"epochs": len(state["history"]), "history": state["history"],
            "val_accuracy": last.get("val_accuracy"), "resumed": resume}


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard logs when the ``tensorboard`` package is there (TF >= 2.20 no longer
    installs it; without it tf.summary fails mid-epoch), else a note and none."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(f"note: tensorboard is not installed; {log_dir} is not written", file=sys.stderr)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]


def _load_checkpoint(path: Path, jit: bool, eager: bool) -> keras.Model:
    """A model saved by RunCheckpoint, with its optimizer state, recompiled for this machine."""
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # a damaged zip or h5 raises many types
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                         "start again with --overwrite") from None
    _compile(model, model.optimizer, jit, eager)  # the same optimizer object keeps its slots
    return model


def cmd_fit(args) -> int:
    """The ``fit`` subcommand: resolve the config (the stored one when resuming) and train."""
    flags = {k: getattr(args, k, None) for k in (
        "model", "weights", "epochs_coarse", "epochs_fine", "batch_size", "lr", "fine_lr",
        "unfreeze", "patience", "seed", "strategy", "mixed_precision", "xla", "verify")}
    flags["build_dir"] = args.dir
    run = Path(args.out)
    base = None
    if args.resume and not args.overwrite and (run / cfgmod.CONFIG_NAME).is_file():
        base = cfgmod.load_run_config(run).to_dict()
    cfg = cfgmod.resolve_config(flags, args.config, base=base)
    summary = fit(cfg, run, resume=bool(args.resume), overwrite=bool(args.overwrite))
    acc = summary.get("val_accuracy")
    shown = "" if acc is None else f", val accuracy {acc:.4f}"
    print(f"{run}: {summary['epochs']} epochs{shown}")
    return 0

