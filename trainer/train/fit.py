"""``frozenaug-train fit``: train a model from a build's shards, resumable.

From scratch (``--weights none``, the default, with ``small_resnet``): every layer trains from
the first step, BatchNorm included, with AdamW (decoupled weight decay, none on norms and
biases), a linear warm-up of ``warmup_epochs`` then cosine decay to lr/100, and label
smoothing. The fine phase (``epochs_fine``, default 0) is then a finishing phase: the same net
and regularisers at ``fine_lr`` (cosine, no warm-up), on ``fine_build``'s train split when
given: heavy augmentation for robustness, then a few epochs of a light build of the same split
give back the clean accuracy heavy costs (README, "Models").

From pretrained weights (``imagenet`` or a file), the original project's two phases. Coarse:
the backbone is frozen and runs in inference mode, the head trains with L2 (``head_l2``) at
``lr``. Fine: the model is rebuilt with L1L2 (``fine_l1``, ``fine_l2``) on the head, the coarse
weights are copied in, and the top ``unfreeze`` backbone layers train (BatchNorm stays frozen)
at ``fine_lr``, with a new optimizer and schedule. Keras epochs are numbered across both phases
(the fine phase starts where the coarse one stopped), so the stream reads frozen epoch
``e mod K`` and ``history.csv`` is one table with a ``phase`` column.

Monitoring. Each phase has its own EarlyStopping (best weights restored), and with
``schedule=plateau`` a ReduceLROnPlateau, both watching ``val_ce``: the plain cross-entropy of
the val split, without label smoothing or weight penalties, so that the phases, whose
regularisers differ, are comparable (``val_loss`` jumps when L1L2 is switched on). Class
weights come from the split's own train counts (real images, not post-MixUp argmaxes).

MixUp/CutMix. ``--mix build`` trains on what the build froze; ``--mix fresh`` draws them anew
for every batch while reading (trainer/readmix.py), from a build without a mix stage.

Consistency. ``--consistency jsd`` trains on V frozen views of each image per batch
(trainer/read/views.py) with AugMix's Jensen-Shannon term added to the anchor view's loss
(trainer/train/consistency.py); validation and the saved model stay single-view.

BatchNorm. After the last epoch the moving statistics of every BatchNorm layer that trained
are recomputed with the final weights over a few thousand training images ("precise BN",
trainer/bnstats.py): moving averages lag behind fast-changing weights, most on short runs.

Starting. Everything that can fail on bad input (the config, the build and its shards, with
``--verify`` their sha256, the model and its weights) is checked before fit writes anything, so
a failed start leaves no run folder, or an existing one untouched. A resume (and
``--overwrite``) first deletes the ``.tmp-*`` files a kill left in RUN and RUN/checkpoints.

Resuming. After every epoch a checkpoint (model and optimizer, best weights, ``state.json``,
``history.csv``; see trainer/checkpoint.py) is written so that ``--resume`` continues after the
last completed epoch with the same counters, and the history has the length of an uninterrupted
run.

Several GPUs: trainer/replicas.py. Several machines (``--strategy multiworker``):
trainer/multiworker.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from frozenaug.common.atomic import write_json
from frozenaug.common.errors import InputError
from frozenaug.format import Manifest, load_manifest
from frozenaug.imaging.mixing import MixConfig
from frozenaug.trainer import config as cfgmod
from frozenaug.trainer.config import MODEL_NAME, RUN_INFO_NAME
from frozenaug.trainer.read.readmix import fresh_mix
from frozenaug.trainer.read.stream import ShardStream
from frozenaug.trainer.read.views import ViewStream
from frozenaug.trainer.train import checkpoint as ckpt
from frozenaug.trainer.train import consistency, keras_fixes, models
from frozenaug.trainer.train import multiworker as mw
from frozenaug.trainer.train.bnstats import batchnorm_layers, recompute_bn_statistics
from frozenaug.trainer.train.replicas import distributed_batches, sync_batchnorm
from frozenaug.trainer.train.rundir import check_run_dir, prepare_run_dir


def _gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _tristate(value: str, gpu: bool) -> bool:
    return gpu if value == "auto" else value == "on"


def _jit(cfg: cfgmod.FitConfig, gpu: bool) -> bool:
    """XLA for the train step: ``auto`` means on a GPU, except under multiworker, whose
    cross-worker all-reduce TensorFlow (2.21) cannot compile for CPUs and which is not
    verified compiled on GPUs here; ``--xla on`` there asks for it on GPUs only."""
    if cfg.strategy != "multiworker":
        return _tristate(cfg.xla, gpu)
    if cfg.xla == "on" and not gpu:
        raise InputError("--xla on: TensorFlow cannot compile the cross-worker all-reduce of "
                         "--strategy multiworker for CPUs; use --xla off or auto")
    return cfg.xla == "on"


def class_weights(counts: list[int]) -> dict[int, float]:
    """Balanced weights n / (C * n_c); a class absent from train gets 1 (it never occurs)."""
    n, c = sum(counts), len(counts)
    return {i: (n / (c * k) if k else 1.0) for i, k in enumerate(counts)}


@dataclass
class Plan:
    """What one start of ``fit`` resolved from its inputs, before it writes anything."""

    cfg: cfgmod.FitConfig
    run: Path
    manifest: Manifest
    shape: tuple[int, int, int]
    pretrained: bool  # two phases, backbone in inference mode; else everything trains
    gpu: bool
    mixed: bool
    jit: bool
    eager: bool
    strategy: tf.distribute.Strategy
    global_batch: int
    val_batch: int
    train: ShardStream
    val: ShardStream | None
    mix: MixConfig | None  # drawn anew every epoch while reading (cfg.mix == "fresh")
    fine_train: ShardStream | None  # the fine phase's train split when cfg.fine_build is set
    monitor: str
    class_weight: dict[int, float] | None
    verbose: int
    cluster: mw.Cluster | None = None  # --strategy multiworker

    def stream(self, phase: str) -> ShardStream:
        """The train stream a phase reads."""
        return self.fine_train if phase == "fine" and self.fine_train is not None else self.train

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def chief(self) -> bool:
        """This process writes the run directory (a non-chief worker writes a private one)."""
        return self.cluster is None or self.cluster.chief


def make_plan(cfg: cfgmod.FitConfig, run: Path, *, verbose: int | None,
              eager: bool, cluster: mw.Cluster | None = None) -> Plan:
    """Open the build and its streams and decide devices and batches; writes nothing.

    Under ``multiworker`` this waits until every worker has joined."""
    manifest = load_manifest(cfg.build_dir)
    cfgmod.check_trainable(manifest)
    gpu = _gpu_present()
    jit = _jit(cfg, gpu)  # may refuse: before the strategy waits for the other workers
    if cfg.strategy == "multiworker":
        strategy = mw.make_strategy()
    elif cfg.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    global_batch, drop, val_batch = distributed_batches(
        sum(manifest.class_counts("train")), sum(manifest.class_counts("val")),
        cfg.batch_size, strategy.num_replicas_in_sync, always=cfg.strategy == "multiworker")
    train = ShardStream(manifest, "train", batch_size=global_batch, shuffle=True, seed=cfg.seed,
                        drop_remainder=drop, verify=cfg.verify)
    fine_train = None
    if cfg.fine_build:
        fine_manifest = load_manifest(cfg.fine_build)
        cfgmod.check_fine_build(manifest, fine_manifest)
        fine_train = ShardStream(fine_manifest, "train", batch_size=global_batch, shuffle=True,
                                 seed=cfg.seed, drop_remainder=drop, verify=cfg.verify)
    val = (ShardStream(manifest, "val", batch_size=val_batch, shuffle=False, verify=cfg.verify)
           if manifest.shards_of("val") else None)
    consistency.check(cfg, [train, *([fine_train] if fine_train else [])])
    mix = None
    if cfg.mix == "fresh":
        if train.soft_labels:
            raise InputError(
                f"{cfg.build_dir}: --mix fresh draws MixUp/CutMix while reading, but this build "
                "froze them already (soft labels); build with a policy without a mix stage")
        mix = MixConfig.from_dict(manifest.policy_mix) if manifest.policy_mix else MixConfig()
    return Plan(
        cfg=cfg, run=run, manifest=manifest, shape=tuple(manifest.image_shape),
        pretrained=cfg.weights != "none", gpu=gpu, mixed=_tristate(cfg.mixed_precision, gpu),
        jit=jit, eager=eager, strategy=strategy, global_batch=global_batch,
        val_batch=val_batch, train=train, val=val, mix=mix, fine_train=fine_train,
        # The plain cross-entropy, without label smoothing or weight penalties: comparable
        # across phases whose regularisers differ (the loss is not).
        monitor="val_ce" if val is not None else "ce",
        class_weight=(class_weights(manifest.split_counts("train")) if cfg.class_weights
                      else None),
        verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose,
        cluster=cluster,
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
    Under ``multiworker`` a non-chief worker does the same work into a private temporary
    folder (removed at the end), starting from a copy of the chief's run state.
    """
    # 1. Everything that can fail on bad input (config, build, shards, model and its weights)
    #    runs before the first write, so a failed start leaves no run folder, or an untouched one.
    cfg.validate()
    models.check_model_name(cfg.model)
    cluster = mw.read_tf_config() if cfg.strategy == "multiworker" else None
    run = Path(out)
    # Every worker checks the shared run folder: the chief writes only once all have joined.
    check_run_dir(run, cfg, resume=resume, overwrite=overwrite)
    state = ckpt.RunState() if overwrite else ckpt.load_state(run)
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
            model = _load_checkpoint(run / state.checkpoint, plan)
        else:
            model = _build(plan, "coarse", cfg.weights)
            models.set_trainable(model, "coarse", cfg.unfreeze, plan.pretrained)
            _compile(model, _optimizer(plan, "coarse"), plan)

        # 2. The run folder, its config and the facts of this start.
        prepare_run_dir(run, cfg, overwrite=overwrite)
        write_run_info(plan)
        callbacks = [*(_tensorboard(run / "tb") if plan.chief else []), *extra_callbacks]

        # 3. The phases. From scratch the first phase trains everything; with pretrained
        #    weights it trains the head, and the fine phase the top of the backbone.
        if state.phase == "coarse":
            train_phase(model, "coarse", cfg.epochs_coarse, plan, state, callbacks)
            ckpt.save_atomic(run / ckpt.COARSE_FINAL, model.save_weights)
            state.next_phase()
            (run / ckpt.BEST_WEIGHTS).unlink(missing_ok=True)
            ckpt.save_state(run, state)
            if cfg.epochs_fine:
                model = fine_model(plan, state)
        if cfg.epochs_fine:
            train_phase(model, "fine", state.fine_start + cfg.epochs_fine, plan, state,
                        callbacks)

        # 4. BatchNorm statistics that match the final weights ("precise BN"), then the model.
        last = "fine" if cfg.epochs_fine else "coarse"
        bn_images = precise_bn(model, plan.stream(last), plan, state.epoch) if (
            cfg.precise_bn) else 0
        if cluster is not None:
            mw.check_same_weights(plan.strategy, model, cluster)
        ckpt.save_atomic(run / MODEL_NAME, model.save)
    ckpt.write_curves(run / ckpt.CURVES_NAME, state.history, state.fine_start)
    state.phase = "done"
    ckpt.save_state(run, state)
    ckpt.remove_epoch_checkpoints(run)  # the final model replaces them; keep weights files
    last = state.history[-1] if state.history else {}
    return {"epochs": len(state.history), "history": state.history,
            "val_accuracy": last.get("val_accuracy"), "resumed": resume,
            "precise_bn_images": bn_images, "chief": plan.chief}


def check_resume_batch(plan: Plan, state: ckpt.RunState) -> None:
    """A resume must keep the global batch: the stream's steps per epoch and the learning-rate
    schedule saved with the optimizer were made for it (another number of GPUs or workers
    changes it; trainer/replicas.py)."""
    info = plan.run / RUN_INFO_NAME
    if not state.history or not info.is_file():
        return
    try:
        was = json.loads(info.read_text()).get("global_batch_size")
    except (OSError, ValueError, AttributeError):
        return  # run.json is rewritten at this start anyway
    if isinstance(was, int) and was != plan.global_batch:
        raise InputError(
            f"{info}: the run trained with a global batch of {was}, this start has "
            f"{plan.global_batch} (--batch-size {plan.cfg.batch_size} x {plan.replicas} "
            "replicas); resume with as many GPUs and workers as before")


def train_phase(model: keras.Model, phase: str, end_epoch: int, plan: Plan,
                state: ckpt.RunState, callbacks: list[keras.callbacks.Callback]) -> None:
    """Train ``model`` from the epoch after ``state.epoch`` up to ``end_epoch`` (exclusive),
    with EarlyStopping (best weights restored), ReduceLROnPlateau under ``schedule=plateau``,
    and a checkpoint after every epoch; the counters continue those of ``state``."""
    cfg, run = plan.cfg, plan.run
    start = state.epoch + 1
    best = run / ckpt.BEST_WEIGHTS
    es = ckpt.ResumableEarlyStopping(state.early_stopping, monitor=plan.monitor,
                                     patience=max(cfg.patience, 1), restore_best_weights=True)
    if state.early_stopping and best.is_file():
        es.initial_best_weights = ckpt.weights_from_file(model, best)
    rlr = None
    if cfg.schedule == "plateau":
        rlr = ckpt.ResumableReduceLR(state.reduce_lr, monitor=plan.monitor,
                                     factor=cfg.lr_factor, patience=max(1, cfg.patience // 2),
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


def fine_model(plan: Plan, state: ckpt.RunState) -> keras.Model:
    """The fine phase's model: its checkpoint, or the coarse weights in a model rebuilt with
    the fine phase's regulariser and trainable layers."""
    if state.checkpoint:
        return _load_checkpoint(plan.run / state.checkpoint, plan)
    model = _build(plan, "fine", "none")
    model.load_weights(plan.run / ckpt.COARSE_FINAL)
    models.set_trainable(model, "fine", plan.cfg.unfreeze, plan.pretrained)
    _compile(model, _optimizer(plan, "fine"), plan)
    return model


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


def write_run_info(plan: Plan) -> None:
    write_json(plan.run / RUN_INFO_NAME, {
        "class_names": plan.manifest.class_names, "image_shape": list(plan.shape),
        "build_dir": str(Path(plan.cfg.build_dir).resolve()), "replicas": plan.replicas,
        "global_batch_size": plan.global_batch, "steps_per_epoch": plan.train.steps_per_epoch,
        "val_batch_size": plan.val_batch if plan.val else 0, "mixed_precision": plan.mixed,
        "xla": plan.jit, "gpu": plan.gpu, "train_samples": plan.train.num_samples,
        "strategy": plan.cfg.strategy, "workers": plan.cluster.workers if plan.cluster else 1,
        "val_samples": plan.val.num_samples if plan.val else 0,
        "class_weight": plan.class_weight,
        "fine_build": str(Path(plan.cfg.fine_build).resolve()) if plan.cfg.fine_build else None,
        "fine_lr": plan.cfg.fine_lr_value,  # config.json keeps "auto"; this is what trained
    })


def _build(plan: Plan, phase: str, weights: str) -> keras.Model:
    cfg = plan.cfg
    # L1L2 belongs to the transfer recipe's fine-tuning; from scratch the fine phase finishes
    # the same net, with the same regulariser
    reg = (models.head_regularizer(0.0, cfg.head_l2) if phase == "coarse" or not plan.pretrained
           else models.head_regularizer(cfg.fine_l1, cfg.fine_l2))
    return models.build_model(
        cfg.model, plan.shape, plan.manifest.num_classes, weights=weights,
        pretrained=plan.pretrained, head_units=cfg.head_units, dropout=cfg.dropout,
        head_regularizer=reg, output_l2=cfg.output_l2, seed=cfg.seed,
        input_norm=cfg.model_input_norm,
    )


# AdamW decays weights only: BatchNorm/LayerNorm scales and shifts and biases keep theirs.
NO_DECAY = ["gamma", "beta", "bias"]


def _optimizer(plan: Plan, phase: str) -> keras.optimizers.Optimizer:
    """The phase's optimizer; its learning rate a warm-up + cosine schedule over the phase's
    steps, or a constant that ReduceLROnPlateau lowers (``schedule=plateau``)."""
    cfg = plan.cfg
    peak = cfg.lr if phase == "coarse" else cfg.fine_lr_value
    lr: float | keras.optimizers.schedules.LearningRateSchedule = peak
    if cfg.schedule == "cosine":
        per_epoch = plan.stream(phase).steps_per_epoch
        steps = per_epoch * (cfg.epochs_coarse if phase == "coarse" else cfg.epochs_fine)
        # warm-up only from random weights, where the first large steps do the harm
        warmup = int(round(cfg.warmup_epochs * per_epoch)) if (
            phase == "coarse") else 0
        warmup = min(warmup, max(steps - 1, 0))
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else peak, max(steps - warmup, 1), alpha=0.01,
            warmup_target=peak if warmup else None, warmup_steps=warmup)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    opt = keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


def _compile(model: keras.Model, optimizer: keras.optimizers.Optimizer, plan: Plan) -> None:
    if plan.replicas > 1:  # fit compiles under the strategy's scope
        sync_batchnorm(model)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=plan.cfg.label_smoothing),
        metrics=["accuracy", keras.metrics.CategoricalCrossentropy(name="ce")],
        jit_compile=plan.jit and not plan.eager, run_eagerly=plan.eager,
    )
    if plan.cfg.consistency != "none":
        consistency.install(model, plan.cfg.consistency_views, plan.cfg.consistency_weight)


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """TensorBoard logs when the ``tensorboard`` package is there (TF >= 2.20 no longer
    installs it; without it tf.summary fails mid-epoch), else a note and none."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print(f"note: tensorboard is not installed; {log_dir} is not written", file=sys.stderr)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]


def _load_checkpoint(path: Path, plan: Plan) -> keras.Model:
    """A model saved by RunCheckpoint, with its optimizer state, recompiled for this machine."""
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # a damaged zip or h5 raises many types
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                         "start again with --overwrite") from None
    if isinstance(model.optimizer, keras.optimizers.AdamW):
        model.optimizer.exclude_from_weight_decay(var_names=NO_DECAY)  # not serialised
    _compile(model, model.optimizer, plan)  # the same optimizer object keeps its slots
    return model
