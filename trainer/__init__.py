"""frozenaug trainer: stream frozen shards into tf.data, train, evaluate, predict.

Installed as ``frozenaug.trainer`` (setup.cfg maps this folder); refuses any other name, so a
checkout on ``sys.path`` can never load a second copy of a module as ``trainer.*``.
"""

import os

if __name__ != "frozenaug.trainer":
    raise ImportError(f"this folder is the package frozenaug.trainer; import that, not {__name__}")

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
