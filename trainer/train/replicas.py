"""Training on several devices: global batches that every replica can share, synchronised
BatchNorm.

Several GPUs. ``--strategy mirrored`` builds, compiles and trains under
``tf.distribute.MirroredStrategy`` over all visible GPUs (R replicas, recorded as ``replicas``
in ``run.json``). Several machines. ``--strategy multiworker`` does the same under
``tf.distribute.MultiWorkerMirroredStrategy`` (trainer/train/multiworker.py): R is then the replicas
of all workers together (W machines of G GPUs each: R = W x G; a CPU-only worker is one
replica), and everything below holds for that R; each worker reads every global batch and
keeps its own W-th of it, so the global batch is the same whichever mix of machines and GPUs
makes up R. ``--batch-size`` is per replica: the stream reads global batches of
``batch_size x R`` images (``global_batch_size`` in run.json), each replica gets ``batch_size``
of them, and the gradients are averaged over the global batch. With R > 1 (and under
``multiworker`` always, so that a cluster's batches do not depend on its size) every training step
takes exactly one global batch, so each epoch leaves out its last ``n_train mod (batch_size x
R)`` images (another set each epoch, as the stream shuffles); a replica never gets an empty or
uneven batch. Validation still sees every image, in batches of at most the global size, a
multiple of R, chosen so that no replica's share is empty (``val_batch_size`` in run.json).
BatchNorm layers that train (those of a from-scratch model) synchronise their batch
statistics across replicas, so all replicas, and the saved model, hold the same moving
statistics.

A resume keeps the global batch: ``fit --resume`` refuses another ``batch_size x R`` than
run.json records (the steps per epoch and the schedule depend on it).

Learning rate. ``--lr`` and ``--fine-lr`` are used as given, whatever R is. To move a run tuned
on one device to R replicas, either keep its global batch (divide ``--batch-size`` by R) and its
learning rates: the same optimisation, only faster; or keep the per-replica batch, which makes
the global batch R times larger, and raise the learning rates with it: linearly (lr x R, Goyal
et al. 2017, with a warm-up over the first epochs for large R) is the rule for SGD; for
Adam(W), which fit uses, the square-root rule (lr x sqrt(R), Malladi et al. 2022) is the
safer start.
"""

from __future__ import annotations

import keras

from frozenaug.common.errors import InputError
from frozenaug.trainer.train.bnstats import batchnorm_layers


def distributed_batches(n_train: int, n_val: int, batch_size: int,
                        replicas: int, always: bool = False) -> tuple[int, bool, int]:
    """(global batch, drop the train remainder, val batch size) for ``replicas`` replicas;
    ``always``: these rules for one replica too (multiworker: one worker trains on the
    batches that two train on).

    tf.distribute cuts each global batch into one share per replica. A share may not be empty
    (Conv2D fails on an empty batch on CPU, and a BatchNorm mean over no images is undefined),
    and Keras (3.15) reduces the first validation batch across replicas, which fails unless
    it splits evenly. So with R > 1 training drops each epoch's last partial batch, and
    validation uses the largest multiple of R, at most the global batch, whose last batch is
    empty or has at least R images (every sample is still validated exactly once).
    """
    global_batch = batch_size * replicas
    if replicas == 1 and not always:
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
        f"the val split's {n_val} images cannot be shared among {replicas} replicas without "
        "an empty share; build with a larger val split or train on fewer devices"
    )


def sync_batchnorm(model: keras.Model) -> None:
    """Make BatchNormalization average its batch statistics over all replicas.

    Keras 3 keeps each replica's moving mean and variance apart (their variables aggregate
    "none"), so unsynchronised replicas drift apart, validate with different statistics, and
    the saved model holds replica 0's. Synchronised, every replica applies the same update,
    that of the global batch, as one device would. (Frozen backbone BatchNorm never updates.)
    """
    for layer in batchnorm_layers(model, include_frozen=True):
        layer.synchronized = True
