"""Keras 3.15 under MultiWorkerMirroredStrategy (keras-team/keras#20585), adapted only while a
multi-worker fit runs, and only for the Keras releases it was checked on.

Keras' TensorFlow trainer fails ``fit`` under this strategy in two places: the symbolic build
reduces the first input batch (a tuple) with ``strategy.reduce``, which MultiWorkerMirroredStrategy
does not accept for a structure, and each step reduces the scalar logs with ``axis=0``.
``multiworker_fixes`` replaces both for this strategy only, and puts the originals back when the
fit ends: the build takes the first local replica's batch (only its shapes matter), and the
per-step logs are averaged over the local replicas (the progress bar's running values); the
epoch's logs, which the history, EarlyStopping and the checkpoints use, are the all-reduced
metric results as before. They are private Keras internals, hence the pinned range: another
Keras is refused (one line) rather than patched blind. tests/test_multiworker.py fails once
upstream no longer needs this.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from frozenaug.common.errors import InputError
from frozenaug.trainer.train.multiworker import is_multiworker

# Keras releases these replacements were checked on (the two-worker test); setup.cfg pins the
# same range for the [cpu] and [gpu] extras.
TESTED_KERAS = ((3, 15), (3, 16))  # >= 3.15, < 3.16


def _version(text: str) -> tuple[int, int]:
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0)
                    for part in (text.split(".") + ["0"])[:2])
    return major, minor


def check_keras() -> None:
    """Refuse a Keras outside the tested range, before any worker waits for the others."""
    import keras

    lo, hi = TESTED_KERAS
    if not lo <= _version(keras.__version__) < hi:
        raise InputError(
            f"--strategy multiworker: Keras {keras.__version__} is not a release frozenaug "
            f"adapts for multi-worker training (keras-team/keras#20585; checked on "
            f"{lo[0]}.{lo[1]}.x); install keras>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}")


@contextmanager
def multiworker_fixes() -> Iterator[None]:
    """Keras' trainer adapted to MultiWorkerMirroredStrategy for the duration of the block."""
    check_keras()
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    build, reduce_fn = cls._maybe_symbolic_build, tf_trainer.reduce_per_replica

    def first_local(v: Any, strategy: Any) -> Any:
        if isinstance(v, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(v)[0]
        return v

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if iterator is not None and is_multiworker(strategy):
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(lambda v: first_local(v, strategy), batch)
                break
            iterator = None
        return build(self, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and is_multiworker(strategy):
            def mean(v: Any) -> Any:
                if isinstance(v, tf.distribute.DistributedValues):
                    return tf.reduce_mean(tf.stack(strategy.experimental_local_results(v)),
                                          axis=0)
                return v

            return tf.nest.map_structure(mean, values)
        return reduce_fn(values, strategy, reduction)

    cls._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        cls._maybe_symbolic_build = build
        tf_trainer.reduce_per_replica = reduce_fn
