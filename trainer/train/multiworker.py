"""``fit --strategy multiworker``: one training over several machines (workers), with
``tf.distribute.MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` variable.

Every worker runs the same ``frozenaug-train fit`` command; TF_CONFIG, different on each,
names the cluster and this worker's place in it (README, "Multi-worker training")::

    {"cluster": {"worker": ["gpu1:12345", "gpu2:12345"]}, "task": {"type": "worker", "index": 0}}

The chief is the task of type ``chief``, or worker 0 when the cluster has no chief.

Data. Every worker reads the same build directory (shared storage, or identical copies at the
same path) and streams the same seeded sequence of global batches; worker i of W keeps rows
``[i*b, (i+1)*b)`` of each (b = global batch / W) and hands them to its local replicas, so the
workers together see each global batch exactly once, as one machine with the same global batch
would. tf.data autosharding is off: the slicing is this module's (``worker_slices``), done
after reading, so each worker reads and decodes every image of the epoch and uses 1/W of them
(cheap for raw shards; the reader's cost is W times that of a reader-level split).
Validation is sliced the same way and every worker evaluates its share: the logged
``val_*`` metrics are Keras' metric results, whose variables are summed over all replicas of
all workers, i.e. the metrics of the whole val split, the same on every worker.

Files. Only the chief writes the run directory. Every worker performs the same saves (saving
may read variables that need a collective), a non-chief into a private temporary directory
that is removed when fit ends. ``--resume``: every worker reads the chief's ``state.json`` and
checkpoint from the run directory, which must be on storage all workers share at the same
path; a non-chief copies them into its private directory and continues from there. Before
anything is written the workers compare their run states (a collective), and refuse to start
when they differ (e.g. a worker that does not see the shared run directory). A worker that
dies makes the others fail in their next collective: fit says so in one line (exit 2), and
every worker is restarted with ``--resume``.

Keras 3.15 cannot run ``fit`` under this strategy as shipped (keras-team/keras#20585):
``keras_fixes.multiworker_fixes`` adapts it while a multi-worker fit runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frozenaug.common.atomic import TMP_PREFIX
from frozenaug.common.errors import InputError, brief
from frozenaug.common.safeparse import parse_json
from frozenaug.trainer.layout import CHECKPOINT_DIR

if TYPE_CHECKING:
    import tensorflow as tf

TF_CONFIG = "TF_CONFIG"
TASK_TYPES = ("chief", "worker")  # the types that train; MWMS has no ps or evaluator


@dataclass(frozen=True)
class Cluster:
    """This process's place in the TF_CONFIG cluster."""

    workers: int  # tasks that train: chief + workers
    task_type: str
    task_index: int
    has_chief: bool = False

    @property
    def chief(self) -> bool:
        """The task that writes the run directory: ``chief``, or worker 0 without one."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.task_index == 0
                                             and not self.has_chief)

    def describe(self) -> str:
        return f"{self.task_type} {self.task_index} of {self.workers} workers"


def read_tf_config(environ: Mapping[str, str] | None = None) -> Cluster:
    """The cluster TF_CONFIG describes, checked; InputError naming TF_CONFIG and the fault.

    Needs no TensorFlow, so the command line checks it before TensorFlow starts.
    """
    env = os.environ if environ is None else environ
    raw = env.get(TF_CONFIG)
    where = f"--strategy multiworker: {TF_CONFIG}"
    if raw is None or not raw.strip():
        raise InputError(f"{where} is not set; set it on every worker to "
                         '{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": '
                         '"worker", "index": i}} (README, "Multi-worker training")')
    try:
        data = parse_json(raw)
    except ValueError as e:
        raise InputError(f"{where} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a JSON object with 'cluster' and 'task'")
    cluster, task = data.get("cluster"), data.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise InputError(f"{where} has no 'cluster' object (task type -> list of host:port)")
    if not isinstance(task, dict):
        raise InputError(f"{where} has no 'task' object ({{\"type\": ..., \"index\": ...}})")
    unknown = sorted(set(cluster) - set(TASK_TYPES))
    if unknown:
        raise InputError(f"{where}: cluster task type(s) {', '.join(map(repr, unknown))} not "
                         f"supported by MultiWorkerMirroredStrategy (only {TASK_TYPES})")
    addresses: list[str] = []
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not hosts:
            raise InputError(f"{where}: cluster.{kind} must be a non-empty list of 'host:port'")
        if kind == "chief" and len(hosts) != 1:
            raise InputError(f"{where}: cluster.chief must list exactly one address, got "
                             f"{len(hosts)}")
        for h in hosts:
            host, _, port = h.rpartition(":") if isinstance(h, str) else ("", "", "")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InputError(f"{where}: cluster.{kind} address {brief(h)} is not 'host:port'")
        addresses += hosts
    dup = sorted({a for a in addresses if addresses.count(a) > 1})
    if dup:
        raise InputError(f"{where}: address(es) {', '.join(dup)} listed twice")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise InputError(f"{where}: task.type {brief(kind)} is not a task type of the cluster "
                         f"({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not (
            0 <= index < len(cluster[kind])):
        raise InputError(f"{where}: task.index {brief(index)} is not in "
                         f"0..{len(cluster[kind]) - 1} "
                         f"(cluster.{kind} lists {len(cluster[kind])})")
    return Cluster(workers=len(addresses), task_type=kind, task_index=index,
                   has_chief="chief" in cluster)


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy from TF_CONFIG. Returns once every worker has joined (it
    waits for the others), so nothing before it can race with the chief's writes."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


# --- data ------------------------------------------------------------------------------------


def worker_slices(ds: tf.data.Dataset, worker: int, workers: int,
                  local_replicas: int = 1) -> tf.data.Dataset:
    """Worker ``worker``'s share of every (global) batch of ``ds``, as ``local_replicas``
    consecutive per-replica batches (the order tf.distribute hands them to the local replicas).

    A batch of n rows is cut into P = workers x local_replicas parts at ``k*n // P``: a full
    global batch into equal parts (worker i keeps rows [i*b, (i+1)*b)), a smaller last one into
    parts that differ by at most one row, none empty while n >= P. Autosharding is off.
    """
    import tensorflow as tf

    if not 0 <= worker < workers or local_replicas < 1:
        raise ValueError(f"worker {worker} of {workers}, {local_replicas} local replicas")
    parts = workers * local_replicas
    first = worker * local_replicas

    @tf.autograph.experimental.do_not_convert
    def cut(*batch: tf.Tensor) -> tf.data.Dataset:
        n = tf.shape(batch[0], out_type=tf.int64)[0]
        bounds = tf.range(parts + 1, dtype=tf.int64) * n // parts

        def part(k: tf.Tensor) -> tuple[tf.Tensor, ...]:
            a, b = bounds[first + k], bounds[first + k + 1]
            return tuple(t[a:b] for t in batch)

        return tf.data.Dataset.range(local_replicas).map(part)

    out = ds.flat_map(cut)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return out.with_options(options)


def with_class_weights(ds: tf.data.Dataset, class_weight: dict[int, float]) -> tf.data.Dataset:
    """(x, y) -> (x, y, weight of argmax(y)): what Keras' ``class_weight`` does for one-hot or
    soft labels, which ``fit`` cannot apply to an already distributed dataset."""
    import tensorflow as tf

    table = tf.constant([class_weight.get(c, 1.0) for c in range(max(class_weight) + 1)],
                        tf.float32)
    return ds.map(lambda x, y: (x, y, tf.gather(table, tf.argmax(y, axis=-1,
                                                                 output_type=tf.int32))))


def distribute(strategy: tf.distribute.Strategy, make: Callable[[], tf.data.Dataset],
               class_weight: dict[int, float] | None = None) -> Any:
    """A distributed dataset for ``model.fit``: every worker calls ``make()`` (the global
    batches, in the same order on every worker) and keeps its share (``worker_slices``)."""
    local = strategy.num_replicas_in_sync

    def per_worker(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        workers, worker = ctx.num_input_pipelines, ctx.input_pipeline_id
        ds = worker_slices(make(), worker, workers, local // workers)
        return with_class_weights(ds, class_weight) if class_weight else ds

    return strategy.distribute_datasets_from_function(per_worker)


# --- agreement and files ---------------------------------------------------------------------


SAME_INPUTS = ("start every worker with the same command, build directory and run directory, "
               "both on storage all workers share at the same path")


def check_agreement(strategy: tf.distribute.Strategy, values: list[int], what: str,
                    hint: str = SAME_INPUTS, error: type[Exception] = InputError) -> None:
    """Gather ``values`` from every worker (a collective: every worker must call it) and
    raise ``error`` on all of them when they differ."""
    import tensorflow as tf

    local = tf.constant([values], tf.int64)
    gathered = tf.function(lambda: strategy.gather(strategy.run(lambda: local), axis=0))()
    gathered = gathered.numpy()
    rows = {tuple(int(v) for v in r) for r in gathered}
    if len(rows) > 1:
        raise error(f"--strategy multiworker: the workers disagree on {what} "
                    f"({sorted(rows)}); {hint}")


def weights_digest(model: Any) -> str:
    """sha256 of every weight of ``model`` (trainable or not, BatchNorm statistics included)."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def check_same_weights(strategy: tf.distribute.Strategy, model: Any, cluster: Cluster) -> None:
    """All workers hold bit-identical weights (they apply the same all-reduced updates); print
    this worker's digest on stderr, and fail on every worker if any differs."""
    digest = weights_digest(model)
    print(f"{cluster.describe()}: final weights sha256 {digest[:16]}", file=sys.stderr)
    check_agreement(strategy, [int(digest[:15], 16)], "the final weights (sha256 prefixes)",
                    "their replicas drifted apart (a bug: please report it)", RuntimeError)


def is_multiworker(strategy: Any) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@contextmanager
def private_run_dir(run: Path, copy: bool) -> Iterator[Path]:
    """A non-chief worker's run directory: a temporary folder, removed at the end, holding a
    copy of the chief's run state (``copy``: state.json, config.json, run.json and the
    checkpoints, read from the shared run directory) for a resume."""
    tmp = Path(tempfile.mkdtemp(prefix="frozenaug-worker-"))
    try:
        if copy and run.is_dir():
            for src in [*run.iterdir(), *(run / CHECKPOINT_DIR).glob("*")]:
                if not src.is_file() or src.name.startswith(TMP_PREFIX) or src.suffix == ".png":
                    continue
                dest = tmp / src.relative_to(run)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # a checkpoint just replaced
                    shutil.copyfile(src, dest)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
