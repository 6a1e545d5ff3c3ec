"""The training recipe apart from the loop: each phase's model (regulariser, trainable layers),
its optimizer and schedule, the compiled loss and metrics, class weights, and a checkpoint
reloaded for this machine."""

from __future__ import annotations

from pathlib import Path

import keras

from frozenaug.common.errors import InputError
from frozenaug.trainer import layout
from frozenaug.trainer.train import checkpoint as ckpt
from frozenaug.trainer.train import consistency, models
from frozenaug.trainer.train.ckmatch import check_matches, load_weights_checked
from frozenaug.trainer.train.plan import Plan
from frozenaug.trainer.train.replicas import sync_batchnorm


def phase_model(plan: Plan, phase: str, weights: str) -> keras.Model:
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


def make_optimizer(plan: Plan, phase: str) -> keras.optimizers.Optimizer:
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


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer, plan: Plan) -> None:
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


def load_checkpoint(path: Path, plan: Plan) -> keras.Model:
    """A model saved by RunCheckpoint, with its optimizer state, recompiled for this machine."""
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # a damaged zip or h5 raises many types
        raise InputError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); "
                         "start again with --overwrite") from None
    # not another net's (the phases' models differ in regularisers only, not in shapes)
    check_matches(path, model, lambda: phase_model(plan, "coarse", "none"))
    if isinstance(model.optimizer, keras.optimizers.AdamW):
        model.optimizer.exclude_from_weight_decay(var_names=NO_DECAY)  # not serialised
    compile_model(model, model.optimizer, plan)  # the same optimizer object keeps its slots
    return model


def fine_model(plan: Plan, state: ckpt.RunState) -> keras.Model:
    """The fine phase's model: its checkpoint, or the coarse weights in a model rebuilt with
    the fine phase's regulariser and trainable layers."""
    if state.checkpoint:
        return load_checkpoint(plan.run / state.checkpoint, plan)
    model = phase_model(plan, "fine", "none")
    load_weights_checked(model, plan.run / layout.COARSE_FINAL)
    models.set_trainable(model, "fine", plan.cfg.unfreeze, plan.pretrained)
    compile_model(model, make_optimizer(plan, "fine"), plan)
    return model
