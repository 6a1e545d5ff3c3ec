"""AugMix's Jensen-Shannon consistency loss across frozen views (``fit --consistency jsd``).

Hendrycks et al. 2020 (AugMix) train on ``CE(p_1, y) + lambda * JS(p_1, ..., p_V)``, with
``JS = 1/V sum_v KL(p_v || M)`` and ``M`` the mean of the views' softmax outputs: the term pulls
the predictions of differently augmented views of one image together. Here the views are V
frozen epochs of the same train row (trainer/read/views.py), so they cost no augmentation.

How it trains: the train batches hold ``b*V`` images with the V views of a row adjacent (the
anchor first). The model stays the plain single-view model (what ``model.keras`` stores and
evaluate/predict load); only its ``compute_loss`` is replaced on the instance, so Keras' own
``train_step`` (loss scaling, metrics, the optimizer) is unchanged. In training it is the
compiled loss on the anchor rows, with label smoothing, class weights (Keras' class_weight
becomes a per-row sample weight) and the weight penalties exactly as in a plain fit, plus
``weight`` times the mean JSD over rows (not class-weighted: AugMix's term is a plain mean).
Evaluation (val) calls it with ``training=False``: the plain compiled loss on single views.
BatchNorm sees all V views in one forward pass, as in AugMix's reference code. Train metrics
(accuracy, ce) are over all views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from frozenaug.common.errors import InputError

if TYPE_CHECKING:
    from frozenaug.trainer.config import FitConfig
    from frozenaug.trainer.read.stream import ShardStream

# AugMix's reference clamps the mixture at 1e-7 before its log.
EPS = 1e-7


def jensen_shannon(probs: tf.Tensor) -> tf.Tensor:
    """The Jensen-Shannon divergence of each row's V distributions, (b, V, C) -> (b,), in nats:
    ``1/V sum_v KL(p_v || M)``, ``M`` their mean; 0 for identical views."""
    p = tf.cast(probs, tf.float32)
    m = tf.reduce_mean(p, axis=1, keepdims=True)
    log_p = tf.math.log(tf.clip_by_value(p, EPS, 1.0))
    log_m = tf.math.log(tf.clip_by_value(m, EPS, 1.0))
    return tf.reduce_mean(tf.reduce_sum(p * (log_p - log_m), axis=-1), axis=1)


def install(model: keras.Model, views: int, weight: float) -> None:
    """Make ``model``'s training loss CE(anchor) + ``weight`` * JSD(views) for batches laid out
    as ``ViewStream.dataset`` yields them; call after ``compile`` (every compile of the run's
    model: a loaded checkpoint does not keep it)."""
    base = type(model).compute_loss

    def compute_loss(x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> tf.Tensor:
        if not training:
            return base(model, x, y, y_pred, sample_weight, training=training)
        sw = None if sample_weight is None else sample_weight[::views]
        ce = base(model, x, y[::views], y_pred[::views], sw, training=True)
        probs = tf.reshape(y_pred, (-1, views, tf.shape(y_pred)[-1]))
        return ce + tf.cast(weight, ce.dtype) * tf.cast(
            tf.reduce_mean(jensen_shannon(probs)), ce.dtype)

    model.compute_loss = compute_loss


def check(cfg: FitConfig, streams: list[ShardStream]) -> None:
    """Refuse what consistency training cannot read, before fit writes anything: fewer frozen
    epochs than views, frozen MixUp/CutMix (one line each, from ViewStream)."""
    from frozenaug.trainer.read.views import ViewStream

    if cfg.consistency == "none":
        return
    for s in streams:
        try:
            ViewStream(s, cfg.consistency_views)
        except InputError as e:
            raise InputError(f"--consistency {cfg.consistency}: {e}") from None
