"""fit under MirroredStrategy with two replicas, on a CPU split into two logical devices.

Logical devices must be configured before TensorFlow initialises its devices, which other tests
in this pytest process do, so the fit runs in a fresh interpreter that configures them itself
and calls ``train.fit.fit`` in-process (the product has no test-only switch for it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from frozenaug.common.errors import InputError
from frozenaug.trainer.train.replicas import distributed_batches

ROOT = Path(__file__).resolve().parents[1]

# 9 train and 9 val images at 4 per replica (global batch 8): unsplit, the last batch of each
# epoch and of validation holds 1 image, which leaves one replica an empty share.
SCRIPT = r"""
import json, sys
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from build_factory import make_build
from frozenaug.trainer.config import FitConfig
from frozenaug.trainer.train.fit import fit
from frozenaug.trainer.read.stream import ShardStream


class Stop(Exception):
    pass


class StopAfter(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise Stop()


class Replicas(keras.callbacks.Callback):
    seen = []

    def on_train_begin(self, logs=None):
        self.seen.append(self.model.distribute_strategy.num_replicas_in_sync)


tmp = Path(sys.argv[1])
build = make_build(tmp / "b", n_per_class=3, val_per_class=3, num_classes=3, size=32)
cfg = FitConfig(build_dir=str(build), model="simple_cnn", weights="none", epochs_coarse=1,
                epochs_fine=1, batch_size=4, head_units=[16], patience=5,
                strategy="mirrored")
# Interrupted after the coarse epoch, then resumed: the checkpoint reloads under the strategy.
try:
    fit(cfg, tmp / "run", verbose=0, eager=True, extra_callbacks=[Replicas(), StopAfter()])
except Stop:
    pass
fit(cfg, tmp / "run", resume=True, verbose=0, eager=True, extra_callbacks=[Replicas()])

# The saved model on one device, over the whole val split.
model = keras.saving.load_model(tmp / "run" / "model.keras")
val = ShardStream(build, "val", batch_size=64, shuffle=False).dataset()
print(json.dumps({"replicas_seen": Replicas.seen,
                  "single_device_val": model.evaluate(val, verbose=0, return_dict=True)}))
"""


def test_fit_mirrored_on_two_logical_cpus(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
           "TF_CPP_MIN_LOG_LEVEL": "2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas_seen"] == [2, 2]  # the coarse phase, then the resumed fine phase

    run = tmp_path / "run"
    info = json.loads((run / "run.json").read_text())
    assert (info["replicas"], info["global_batch_size"]) == (2, 8)
    assert (info["train_samples"], info["steps_per_epoch"]) == (9, 1)  # remainder dropped
    assert (info["val_samples"], info["val_batch_size"]) == (9, 6)  # 6 + 3: no empty share
    assert (run / "model.keras").is_file()
    state = json.loads((run / "state.json").read_text())
    assert state["phase"] == "done"
    history = state["history"]
    assert [(r["epoch"], r["phase"]) for r in history] == [(0, "coarse"), (1, "fine")]
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 2
    # Every val image counted once, and every replica held the weights that were saved
    # (synchronised BatchNorm statistics): one device agrees with the mirrored validation.
    # (agreement ~1e-7 relative; unsynchronised BatchNorm statistics differ by ~1e-4)
    assert history[-1]["val_loss"] == pytest.approx(out["single_device_val"]["loss"], rel=1e-5)
    assert history[-1]["val_accuracy"] == pytest.approx(out["single_device_val"]["accuracy"])


@pytest.mark.parametrize("n_train, n_val, batch, replicas, expected", [
    (10, 9, 4, 1, (4, False, 4)),  # one replica: as before, partial batches kept
    (9, 9, 4, 2, (8, True, 6)),  # 8 + 1 would leave a share empty; 6 + 3 does not
    (100, 16, 4, 2, (8, True, 8)),
    (100, 7, 4, 2, (8, True, 4)),  # 4 + 3; a single batch of 7 cannot split evenly
    (100, 6, 4, 2, (8, True, 6)),  # one batch of 6 splits 3 + 3
    (100, 0, 4, 2, (8, True, 8)),  # no val split
    (1000, 1001, 64, 4, (256, True, 256)),  # last batch 233 images
    (1000, 1025, 64, 4, (256, True, 252)),  # 256 would leave 1 image for 4 replicas
])
def test_distributed_batches(n_train, n_val, batch, replicas, expected):
    assert distributed_batches(n_train, n_val, batch, replicas) == expected


def test_distributed_batches_multiworker_rules_for_one_replica():
    # multiworker: one worker drops the remainder as two do (its batches are theirs)
    assert distributed_batches(10, 9, 4, 1, always=True) == (4, True, 4)
    assert distributed_batches(10, 3, 4, 1, always=True) == (4, True, 3)


def test_distributed_batches_refusals():
    with pytest.raises(InputError, match="at least 8 train images"):
        distributed_batches(7, 10, 4, 2)
    with pytest.raises(InputError, match="val split's 3 images"):
        distributed_batches(100, 3, 4, 2)
