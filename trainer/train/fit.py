"""``frozenaug-train fit``: train a model from a build's shards, resumable.

From scratch (``--weights none``, the default, with ``small_resnet``): every layer trains from
the first step, BatchNorm included, with AdamW (decoupled weight decay, none on norms and
biases), a linear warm-up of ``warmup_epochs`` then cosine decay to lr/100, and label
smoothing. The fine phase (``epochs_fine``) is then a finishing phase: the same net and
regularisers at ``fine_lr`` (cosine, no warm-up), on ``fine_build``'s train split when given:
heavy augmentation for robustness, then a few epochs of a light build of the same split give
back the clean accuracy heavy costs (README, "Models"). By default (``auto``) that is the
build's own finishing build (``frozenaug-build build --finish``, written after the heavy
preset) for 3 epochs, so ``fit BUILD`` runs the whole recipe.

From pretrained weights (``imagenet`` or a file), the original project's two phases. Coarse:
the backbone is frozen and runs in inference mode, the head trains with L2 (``head_l2``) at
``lr``. Fine: the model is rebuilt with L1L2 (``fine_l1``, ``fine_l2``) on the head, the coarse
weights are copied in, and the top ``unfreeze`` backbone layers train (BatchNorm stays frozen)
at ``fine_lr``, with a new optimizer and schedule. Keras epochs are numbered across both phases
(the fine phase starts where the coarse one stopped), so the stream reads frozen epoch
``e mod K`` and ``history.csv`` is one table with a ``phase`` column.

Monitoring. Each phase has its own EarlyStopping (best weights restored; by default it stops
nothing under the cosine schedule, see ``patience``), and with ``schedule=plateau`` a
ReduceLROnPlateau, both watching ``val_ce``: the plain cross-entropy of
the val split, without label smoothing or weight penalties, so that the phases, whose
regularisers differ, are comparable (``val_loss`` jumps when L1L2 is switched on). Class
weights come from the split's own train counts (real images, not post-MixUp argmaxes).

MixUp/CutMix. ``--mix build`` trains on what the build froze; ``--mix fresh`` draws them anew
for every batch while reading (trainer/read/readmix.py), from a build without a mix stage.

Consistency. ``--consistency jsd`` trains on V frozen views of each image per batch
(trainer/read/views.py) with AugMix's Jensen-Shannon term added to the anchor view's loss
(trainer/train/consistency.py); validation and the saved model stay single-view.

BatchNorm. After the last epoch the moving statistics of every BatchNorm layer that trained
are recomputed with the final weights over a few thousand training images ("precise BN",
trainer/train/bnstats.py): moving averages lag behind fast-changing weights, most on short runs.

Starting. Everything that can fail on bad input (the config, the build and its shards, with
``--verify`` their sha256, the model and its weights) is checked before fit writes anything, so
a failed start leaves no run folder, or an existing one untouched. A resume (and
``--overwrite``) first deletes the ``.tmp-*`` files a kill left in RUN and RUN/checkpoints.

Resuming. After every epoch a checkpoint (model and optimizer, best weights, ``state.json``,
``history.csv``; see trainer/train/checkpoint.py) is written so that ``--resume`` continues after
the last completed epoch with the same counters, and the history has the length of an uninterrupted
run.

Several GPUs: trainer/train/replicas.py. Several machines (``--strategy multiworker``):
trainer/train/multiworker.py.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from frozenaug.common.errors import InputError
from frozenaug.trainer import config as cfgmod
from frozenaug.trainer import layout
from frozenaug.trainer.layout import MODEL_NAME
from frozenaug.trainer.read.readmix import fresh_mix
from frozenaug.trainer.read.stream import ShardStream
from frozenaug.trainer.read.views import ViewStream
from frozenaug.trainer.train import checkpoint as ckpt
from frozenaug.trainer.train import keras_fixes, models
from frozenaug.trainer.train import multiworker as mw
from frozenaug.trainer.train.bnstats import batchnorm_layers, recompute_bn_statistics
from frozenaug.trainer.train.buildid import check_resume
from frozenaug.trainer.train.plan import Plan, check_resume_batch, make_plan, write_run_info
from frozenaug.trainer.train.recipe import (
    compile_model,
    fine_model,
    load_checkpoint,
    make_optimizer,
    phase_model,
)
from frozenaug.trainer.train.rundir import check_run_dir, prepare_run_dir
from frozenaug.trainer.train.runlock import holding_run


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
    Under ``multiworker`` a non-chief worker does the same work into a private temporary
    folder (removed at the end), starting from a copy of the chief's run state.
    """
    # 1. Everything that can fail on bad input (config, build, shards, model and its weights)
    #    runs before the first write, so a failed start leaves no run folder, or an untouched one.
    cfg = cfgmod.resolve_recipe(cfg.validate())  # fine_build/epochs_fine "auto" made concrete
    models.check_model_name(cfg.model)
    cluster = mw.read_tf_config() if cfg.strategy == "multiworker" else None
    run = Path(out)
    # One fit per run, its builds not rebuilt meanwhile; a failed first epoch leaves nothing.
    with holding_run(run, cfg, writer=cluster is None or cluster.chief):
        # Every worker checks the shared run folder: the chief writes once all have joined.
        check_run_dir(run, cfg, resume=resume, overwrite=overwrite)
        state = ckpt.RunState() if overwrite else ckpt.load_state(run)
        if not overwrite:
            check_resume(run, cfg.build_dir, cfg.fine_build)  # the build split as it was
        if state.phase == "done":
            print(f"{run}: training already finished; nothing to resume", file=sys.stderr)
            return {"epochs": len(state.history), "history": state.history, "resumed": True}
        kwargs = {"resume": resume, "verbose": verbose, "extra_callbacks": extra_callbacks,
                  "eager": eager}
        with keras_fixes.multiworker_fixes() if cluster else contextlib.nullcontext():
            if cluster is None or cluster.chief:
                return _fit(cfg, run, state, cluster, overwrite=overwrite, **kwargs)
            with mw.private_run_dir(run, copy=not overwrite) as private:
                return _fit(cfg, private, state, cluster, overwrite=False, **kwargs)


def _fit(cfg: cfgmod.FitConfig, run: Path, state: ckpt.RunState, cluster: mw.Cluster | None,
         *, resume: bool, overwrite: bool, verbose: int | None,
         extra_callbacks: list[keras.callbacks.Callback] | tuple, eager: bool) -> dict[str, Any]:
    plan = make_plan(cfg, run, verbose=verbose, eager=eager, cluster=cluster)
    check_resume_batch(plan, state)
    if cluster is not None:  # a collective: all workers are here, none has written yet
        mw.check_agreement(plan.strategy, [state.epoch, len(state.history), plan.global_batch,
                                           ("coarse", "fine").index(state.phase)],
                           "the run state (last epoch, history rows, global batch, phase)")
    keras.mixed_precision.set_global_policy("mixed_float16" if plan.mixed else "float32")
    keras.utils.set_random_seed(cfg.seed + len(state.history))

    with plan.strategy.scope():
        if state.phase == "fine":
            model = fine_model(plan, state)
        elif state.checkpoint:
            model = load_checkpoint(run / state.checkpoint, plan)
        else:
            model = phase_model(plan, "coarse", cfg.weights)
            models.set_trainable(model, "coarse", cfg.unfreeze, plan.pretrained)
            compile_model(model, make_optimizer(plan, "coarse"), plan)

        # 2. The run folder, its config and the facts of this start.
        prepare_run_dir(run, cfg, overwrite=overwrite)
        write_run_info(plan)
        callbacks = [*(_tensorboard(run / layout.TB_DIR) if plan.chief else []), *extra_callbacks]

        # 3. The phases, in order; a resume skips those state.json says are over.
        phases = recipe_phases(cfg, plan.pretrained)
        for k, phase in enumerate(phases):
            if state.phase != phase.name:
                continue
            if plan.verbose:
                print(f"phase {k + 1}/{len(phases)}: {phase.role}, {phase.epochs} epochs")
            start = 0 if phase.name == "coarse" else state.fine_start
            train_phase(model, phase.name, start + phase.epochs, plan, state, callbacks)
            if phase.name == "coarse":  # the fine phase starts from these weights
                ckpt.save_atomic(run / layout.COARSE_FINAL, model.save_weights)
                state.next_phase()
                (run / layout.BEST_WEIGHTS).unlink(missing_ok=True)
                ckpt.save_state(run, state)
                if len(phases) > 1:
                    model = fine_model(plan, state)

        # 4. BatchNorm statistics that match the final weights ("precise BN"), then the model.
        bn_images = precise_bn(model, plan.stream(phases[-1].name), plan, state.epoch) if (
            cfg.precise_bn) else 0
        if cluster is not None:
            mw.check_same_weights(plan.strategy, model, cluster)
        ckpt.save_atomic(run / MODEL_NAME, model.save)
    ckpt.write_curves(run / layout.CURVES_NAME, state.history, state.fine_start)
    state.phase = "done"
    ckpt.save_state(run, state)
    ckpt.remove_epoch_checkpoints(run)  # the final model replaces them; keep weights files
    last = state.history[-1] if state.history else {}
    return {"epochs": len(state.history), "history": state.history,
            "val_accuracy": last.get("val_accuracy"), "resumed": resume,
            "precise_bn_images": bn_images, "chief": plan.chief}


@dataclass(frozen=True)
class Phase:
    """One phase of the recipe as data. ``name`` is what state.json and history.csv record
    (coarse, fine: runs from before keep resuming); ``role`` what the phase does."""

    name: str
    role: str
    epochs: int


def recipe_phases(cfg: cfgmod.FitConfig, pretrained: bool) -> list[Phase]:
    """From scratch: train everything, then (``epochs_fine``) a finishing phase at
    ``fine_lr``, on ``fine_build`` when given. Pretrained: the head on a frozen backbone, then
    the top ``unfreeze`` backbone layers fine-tuned."""
    first = Phase("coarse", "head on the frozen backbone" if pretrained else "train every layer",
                  cfg.epochs_coarse)
    if not cfg.epochs_fine:
        return [first]
    role = (f"fine-tune the top {cfg.unfreeze} backbone layers" if pretrained else
            "finish at --fine-lr" + (f" on {cfg.fine_build}" if cfg.fine_build else ""))
    return [first, Phase("fine", role, cfg.epochs_fine)]


def train_phase(model: keras.Model, phase: str, end_epoch: int, plan: Plan,
                state: ckpt.RunState, callbacks: list[keras.callbacks.Callback]) -> None:
    """Train ``model`` from the epoch after ``state.epoch`` up to ``end_epoch`` (exclusive),
    with EarlyStopping (best weights restored), ReduceLROnPlateau under ``schedule=plateau``,
    and a checkpoint after every epoch; the counters continue those of ``state``."""
    cfg, run = plan.cfg, plan.run
    start = state.epoch + 1
    best = run / layout.BEST_WEIGHTS
    patience = cfg.patience_epochs
    # No patience still keeps EarlyStopping, which restores the best epoch's weights at the end.
    es = ckpt.ResumableEarlyStopping(state.early_stopping, monitor=plan.monitor,
                                     patience=patience or end_epoch, restore_best_weights=True)
    if state.early_stopping and best.is_file():
        es.initial_best_weights = ckpt.weights_from_file(model, best)
    rlr = None
    if cfg.schedule == "plateau":
        rlr = ckpt.ResumableReduceLR(state.reduce_lr, monitor=plan.monitor,
                                     factor=cfg.lr_factor,
                                     patience=max(1, (patience or cfgmod.PLATEAU_PATIENCE) // 2),
                                     min_lr=cfg.min_lr)
    ck = ckpt.RunCheckpoint(run, state, phase, es, rlr)
    if start >= end_epoch or state.stopped:
        if es.initial_best_weights is not None:
            model.set_weights(es.initial_best_weights)  # what EarlyStopping would have restored
        return
    stream = plan.stream(phase)

    def train_data() -> tf.data.Dataset:
        reader = ViewStream(stream, cfg.consistency_views) if cfg.consistency != "none" else (
            stream)
        data = reader.dataset(initial_epoch=start, repeat=True)
        if plan.mix is not None and stream is plan.train:  # a fine build mixes as it was built
            data = fresh_mix(data, plan.mix, plan.manifest.num_classes, cfg.seed,
                             first_step=start * stream.steps_per_epoch)
        return data

    class_weight, val_steps = plan.class_weight, None
    if plan.cluster is None:
        data, val = train_data(), plan.val.dataset() if plan.val is not None else None
    else:  # each worker its share of every global batch; the class weights go with it
        data = mw.distribute(plan.strategy, train_data, class_weight)
        class_weight, val = None, None
        if plan.val is not None:  # endless, so that Keras may keep its iterator across epochs
            val = mw.distribute(plan.strategy, lambda: plan.val.dataset(repeat=True))
            val_steps = plan.val.steps_per_epoch
    try:
        model.fit(
            data, steps_per_epoch=stream.steps_per_epoch, validation_data=val,
            validation_steps=val_steps,
            initial_epoch=start, epochs=end_epoch, class_weight=class_weight,
            callbacks=[es, *([rlr] if rlr else []), ck, *callbacks], verbose=plan.verbose,
            shuffle=False,  # the stream shuffles
        )
    except tf.errors.UnavailableError:
        if plan.cluster is None:
            raise
        # A peer died or became unreachable: the collectives abort on every other worker.
        raise InputError(
            f"--strategy multiworker ({plan.cluster.describe()}): lost contact with another "
            f"worker during epoch {state.epoch + 2}; the chief's run folder holds the last "
            "completed epoch: restart every worker with the same command and --resume"
        ) from None


def precise_bn(model: keras.Model, stream: ShardStream, plan: Plan, epoch: int,
               max_images: int = 4096) -> int:
    """Recompute the moving statistics of every BatchNorm layer that trained, as the exact
    average over up to ``max_images`` images of Keras epoch ``epoch``'s frozen epoch of
    ``stream`` (the train split the last phase read), with the final weights (pycls' "precise
    BN"): the moving averages lag behind the weights, most on short runs. Returns the number
    of images used (0: no BatchNorm trained)."""
    if plan.replicas > 1 or not batchnorm_layers(model):
        return 0  # synchronised replicas already agree; a frozen backbone keeps ImageNet's
    batches = (x for x, _ in itertools.islice(stream.iter_numpy(max(epoch, 0)),
                                              max(1, max_images // plan.global_batch)))
    return recompute_bn_statistics(model, batches)


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard logs when the ``tensorboard`` package is there (TF >= 2.20 no longer
    installs it; without it tf.summary fails mid-epoch), else a note and none."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(f"note: tensorboard is not installed; {log_dir} is not written", file=sys.stderr)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]
