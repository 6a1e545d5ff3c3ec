"""What one start of ``fit`` resolves from its inputs before it writes anything: the build and
its streams, devices, strategy and batch sizes, class weights; and the run.json it records."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from frozenaug.common.atomic import write_json
from frozenaug.common.errors import InputError
from frozenaug.common.safeparse import read_json
from frozenaug.format import Manifest, load_manifest
from frozenaug.imaging.mixing import MixConfig
from frozenaug.trainer import config as cfgmod
from frozenaug.trainer.buildcheck import check_fine_build, check_trainable, class_weights
from frozenaug.trainer.layout import RUN_INFO_NAME
from frozenaug.trainer.read.stream import ShardStream
from frozenaug.trainer.train import checkpoint as ckpt
from frozenaug.trainer.train import consistency
from frozenaug.trainer.train import multiworker as mw
from frozenaug.trainer.train.buildid import identity
from frozenaug.trainer.train.replicas import distributed_batches


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
    check_trainable(manifest)
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
        check_fine_build(manifest, fine_manifest)
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
        if fine_train is not None and cfg.epochs_fine:
            # The finishing build is light on purpose: its phase reads it as it was built.
            print("note: --mix fresh mixes the first phase's batches; the fine phase reads "
                  f"{cfg.fine_build} as it was built, without fresh MixUp/CutMix",
                  file=sys.stderr)
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


def check_resume_batch(plan: Plan, state: ckpt.RunState) -> None:
    """A resume must keep the global batch: the stream's steps per epoch and the learning-rate
    schedule saved with the optimizer were made for it (another number of GPUs or workers
    changes it; trainer/train/replicas.py)."""
    info = plan.run / RUN_INFO_NAME
    if not state.history or not info.is_file():
        return
    try:
        was = read_json(info, "run info").get("global_batch_size")
    except (OSError, ValueError, AttributeError):
        return  # run.json is rewritten at this start anyway
    if isinstance(was, int) and was != plan.global_batch:
        raise InputError(
            f"{info}: the run trained with a global batch of {was}, this start has "
            f"{plan.global_batch} (--batch-size {plan.cfg.batch_size} x {plan.replicas} "
            "replicas); resume with as many GPUs and workers as before")


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
        "fresh_mix_phases": ([] if plan.mix is None else
                             ["coarse"] if plan.fine_train is not None else ["coarse", "fine"]),
        **identity(plan.cfg.build_dir),
        **(identity(plan.cfg.fine_build, "fine_build") if plan.cfg.fine_build else {}),
    })
