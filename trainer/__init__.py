"""frozenaug trainer: stream frozen shards into tf.data, train, evaluate, predict.

Installed as ``frozenaug.trainer`` (setup.cfg maps this folder); refuses any other name, so a
checkout on ``sys.path`` can never load a second copy of a module as ``trainer.*``.
"""

import os

if __name__ != "frozenaug.trainer":
    raise ImportError(f"this folder is the package frozenaug.trainer; import that, not {__name__}")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN kernels on by itself only on some x86 CPUs; on an AMD EPYC
# (AVX2) VM they train an epoch of the recipe ~2.5x faster, deterministically for a seed
# (README "Models", bench/trainstep.py). Read when TensorFlow is imported: 0 to compare.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
