"""ShardStream: coverage, epoch cycling, order, labels, bounded memory, errors, Keras fit."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from build_factory import VAL_TEST_EPOCH_STAMP, make_build, read_stamp

from frozenaug import format as fmt
from frozenaug.common.errors import InputError
from frozenaug.trainer.read import rawio
from frozenaug.trainer.read import stream as stream_mod
from frozenaug.trainer.read.stream import ShardStream

# 3 x 100 = 300 train samples per epoch in shards of 150: each shard has 3 chunk-aligned
# blocks (64, 64, 22), so block shuffling across and within shards is exercised.
BIG = dict(n_per_class=100, num_classes=3, shard_size=150, size=8)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_build(tmp_path_factory.mktemp("b"), epochs=3, **BIG)


@pytest.fixture(scope="module")
def soft_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_build(tmp_path_factory.mktemp("s"), epochs=2, soft_labels=True, n_per_class=6)


def _epoch(stream: ShardStream, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    batches = list(stream.iter_numpy(epoch))
    assert len(batches) == stream.steps_per_epoch
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _stored(build: Path, name: str, split: str = "train", epoch: int = 0) -> dict[int, np.ndarray]:
    """source_index -> the stored row of dataset ``name``, straight from the shards."""
    m = fmt.load_manifest(build)
    out = {}
    for s in m.shards_of(split, epoch if split == "train" else None):
        with h5py.File(m.path_of(s)) as f:
            out.update(zip(f[fmt.DS_SOURCE_INDEX][()].tolist(), f[name][()], strict=True))
    return out


def test_every_sample_once_per_epoch_and_epochs_cycle(build: Path) -> None:
    s = ShardStream(build, batch_size=32, seed=1)
    assert (s.num_samples, s.epochs, s.num_classes, s.steps_per_epoch) == (300, 3, 3, 10)
    orders = []
    for e in range(4):
        x, y = _epoch(s, e)
        assert x.dtype == np.uint8 and x.shape == (300, 8, 8, 3)
        assert y.dtype == np.float32 and y.shape == (300, 3)
        src, stamp = read_stamp(x)
        assert sorted(src.tolist()) == list(range(300))  # each sample exactly once
        assert set(stamp.tolist()) == {e % 3}  # epoch e reads frozen epoch e mod K
        hard = _stored(build, fmt.DS_LABELS, epoch=e % 3)
        assert (y.argmax(1) == [hard[i] for i in src]).all() and (y.max(1) == 1).all()
        orders.append(src)
    # shuffled: not manifest order, and a second pass over frozen epoch 0 comes in another order
    assert not (orders[0] == s.source_index(0)).all()
    assert not (orders[3] == orders[0]).all()
    # deterministic for (seed, epoch)
    again = ShardStream(build, batch_size=32, seed=1)
    assert (read_stamp(_epoch(again, 0)[0])[0] == orders[0]).all()


def test_batches_mix_shards(build: Path) -> None:
    s = ShardStream(build, batch_size=64, buffer_blocks=4)
    first = next(s.iter_numpy(0))[0]
    shard_of = {i: k for k, ids in enumerate(np.split(s.source_index(0), 2)) for i in ids}
    assert len({shard_of[i] for i in read_stamp(first)[0].tolist()}) == 2


def test_unshuffled_val_test_and_labels(build: Path) -> None:
    for split in ("val", "test"):
        s = ShardStream(build, split, batch_size=4, shuffle=False)
        assert s.epochs == 1 and s.num_samples == 6
        x, y = _epoch(s, 0)
        src, stamp = read_stamp(x)
        assert (src == s.source_index()).all() and (stamp == VAL_TEST_EPOCH_STAMP).all()
        assert (y.argmax(1) == s.labels()).all() and s.labels().dtype == np.int32
        # every epoch of val/test is the same data in the same order
        assert (read_stamp(_epoch(s, 5)[0])[0] == src).all()


def test_drop_remainder(build: Path) -> None:
    s = ShardStream(build, batch_size=64, drop_remainder=True)
    sizes = [len(x) for x, _ in s.iter_numpy(0)]
    assert sizes == [64] * 4 and s.steps_per_epoch == 4
    assert s.element_spec()[0].shape.as_list() == [64, 8, 8, 3]


def test_soft_labels_pass_through(soft_build: Path) -> None:
    s = ShardStream(soft_build, batch_size=5)
    assert s.soft_labels
    x, y = _epoch(s, 1)
    stored = _stored(soft_build, fmt.DS_SOFT_LABELS, epoch=1)
    np.testing.assert_array_equal(y, np.stack([stored[i] for i in read_stamp(x)[0]]))
    assert (y.max(1) < 1).any()  # really soft, not one-hot
    hard = ShardStream(soft_build, batch_size=5, soft_labels=False)
    assert set(np.unique(_epoch(hard, 1)[1]).tolist()) == {0.0, 1.0}
    val = ShardStream(soft_build, "val")  # val shards have no soft labels: one-hot
    assert not val.soft_labels
    with pytest.raises(InputError, match="soft labels requested"):
        ShardStream(soft_build, "val", soft_labels=True)


def test_dataset_matches_numpy_and_counts_epochs(build: Path) -> None:
    s = ShardStream(build, batch_size=128, seed=3)
    ds = s.dataset(initial_epoch=1)
    for e in (1, 2, 3):  # each iteration is the next epoch
        got = [(x.numpy(), y.numpy()) for x, y in ds]
        want = list(s.iter_numpy(e))
        assert len(got) == len(want) == s.steps_per_epoch
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gx, wx)
            np.testing.assert_array_equal(gy, wy)
    assert s.epochs_read[:3] == [1, 2, 3]


def test_repeat_dataset_runs_epochs_back_to_back(build: Path) -> None:
    s = ShardStream(build, batch_size=100)
    it = iter(s.dataset(initial_epoch=2, repeat=True))
    stamps = [set(read_stamp(next(it)[0].numpy())[1].tolist()) for _ in range(3 * 3)]
    assert stamps == [{2}] * 3 + [{0}] * 3 + [{1}] * 3
    # a fresh iterator starts at initial_epoch again
    assert read_stamp(next(iter(s.dataset(2, repeat=True)))[0].numpy())[1][0] == 2


def test_reads_only_current_epoch_shards(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = ShardStream(build, batch_size=32)
    opened: list[Path] = []
    live: set[int] = set()
    peak = [0]

    class Recording(h5py.File):
        def __init__(self, name: str | Path, *a: object, **k: object) -> None:
            super().__init__(name, *a, **k)
            opened.append(Path(name))
            live.add(id(self))
            peak[0] = max(peak[0], len(live))

        def close(self) -> None:
            live.discard(id(self))
            super().close()

    monkeypatch.setattr(h5py, "File", Recording)
    m = s.manifest
    for e in range(4):
        opened.clear()
        peak[0] = 0
        batches = s.iter_numpy(e)
        next(batches)
        want = {m.path_of(x) for x in m.shards_of("train", e % 3)}
        assert set(opened) == want and len(live) == len(want)
        for _ in batches:
            pass
        assert set(opened) == want and peak[0] == len(want) and not live  # closed at the end


def _peak_bytes(root: Path, epochs: int) -> int:
    s = ShardStream(make_build(root, epochs=epochs, **BIG), batch_size=32)
    tracemalloc.start()
    try:
        for e in range(epochs):
            for _ in s.iter_numpy(e):
                pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_epochs(tmp_path: Path) -> None:
    small, large = _peak_bytes(tmp_path / "k1", 1), _peak_bytes(tmp_path / "k6", 6)
    epoch_bytes = 300 * 8 * 8 * 3
    assert large < small * 1.5 + 64 * 1024, (small, large)
    assert large < 6 * epoch_bytes  # far from holding all K epochs


def _break(build: Path, how: str) -> Path:
    m = fmt.load_manifest(build)
    path = m.path_of(m.shards_of("train", 1)[1])
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "epoch":
        with h5py.File(path, "r+") as f:
            f.attrs[fmt.ATTR_EPOCH] = 0
    elif how == "shape":
        with h5py.File(path, "r+") as f:
            del f[fmt.DS_LABELS]
            f[fmt.DS_LABELS] = np.zeros(3, np.int32)
    return path


@pytest.mark.parametrize("how", ["missing", "truncated", "epoch", "shape"])
def test_broken_shard_is_an_input_error(tmp_path: Path, how: str) -> None:
    build = make_build(tmp_path, epochs=2, **BIG)
    path = _break(build, how)
    with pytest.raises(InputError, match=str(path)):
        ShardStream(build)
    # without the up-front check, reading that epoch fails instead of yielding wrong data
    s = ShardStream(build, validate=False)
    assert len(list(s.iter_numpy(0))) == s.steps_per_epoch  # epoch 0 is intact
    with pytest.raises(InputError, match=str(path)):
        list(s.iter_numpy(1))


def test_bad_arguments(build: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        ShardStream(build, "training")
    with pytest.raises(InputError, match="not a build directory"):
        ShardStream(build / "nope")


def test_keras_fit_reads_a_new_frozen_epoch_each_epoch(build: Path) -> None:
    """What Keras epoch e trains on is frozen epoch e mod K, every train sample once: checked on
    the batches fit consumed (each image's stamp names its sample and frozen epoch)."""
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    seen: list[np.ndarray] = []  # (source, epoch stamp) of each batch, in the order read

    def record(x: tf.Tensor) -> tf.Tensor:
        seen.append(np.stack(read_stamp(x.numpy()), axis=1))
        return x

    def spy(ds: tf.data.Dataset) -> tf.data.Dataset:
        # Pulled batch by batch, in order, by fit (which may read ahead into the next epoch
        # of an endless dataset: the batches are cut into epochs by the step count below).
        def tap(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            out = tf.py_function(record, [x], tf.uint8)
            out.set_shape(x.shape)
            return out, y

        return ds.map(tap)

    def model() -> keras.Model:
        m = keras.Sequential([
            keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ])
        m.compile("adam", "categorical_crossentropy")
        return m

    train_sources = sorted(_stored(build, fmt.DS_LABELS))

    def check(frozen: list[int], steps: int) -> None:
        assert len(seen) >= steps * len(frozen)
        for e, want in enumerate(frozen):
            got = np.concatenate(seen[e * steps:(e + 1) * steps])
            assert set(got[:, 1].tolist()) == {want}  # every image from frozen epoch `want`
            assert sorted(got[:, 0].tolist()) == train_sources  # each train sample once
        seen.clear()

    s, val = ShardStream(build, batch_size=64), ShardStream(build, "val", shuffle=False)
    model().fit(spy(s.dataset()), epochs=4, validation_data=val.dataset(), verbose=0)
    check([0, 1, 2, 0], s.steps_per_epoch)
    r = ShardStream(build, batch_size=64)
    model().fit(spy(r.dataset(1, repeat=True)), epochs=4, initial_epoch=1,
                steps_per_epoch=r.steps_per_epoch, verbose=0)
    check([1, 2, 0], r.steps_per_epoch)  # Keras epochs 1, 2, 3 = frozen 1, 2, 0


def test_raw_chunk_reads_equal_h5py_reads(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = list(ShardStream(build, batch_size=50, seed=2).iter_numpy(1))
    monkeypatch.setattr(rawio, "raw_chunk_offsets", lambda images: None)  # h5py path only
    via_h5py = list(ShardStream(build, batch_size=50, seed=2).iter_numpy(1))
    for (rx, ry), (hx, hy) in zip(raw, via_h5py, strict=True):
        np.testing.assert_array_equal(rx, hx)
        np.testing.assert_array_equal(ry, hy)


def test_compressed_shard_is_read_through_h5py(build: Path) -> None:
    m = fmt.load_manifest(build)
    with h5py.File(m.path_of(m.shards_of("train", 0)[0])) as f:
        assert rawio.raw_chunk_offsets(f[fmt.DS_IMAGES]) is not None  # plain chunks: raw
    f = h5py.File("gz.h5", "w", driver="core", backing_store=False)
    ds = f.create_dataset("images", data=np.zeros((70, 4, 4, 3), np.uint8),
                          chunks=(64, 4, 4, 3), compression="gzip")
    assert rawio.raw_chunk_offsets(ds) is None
    f.close()


def test_yielded_batches_are_never_overwritten(build: Path) -> None:
    # One block per group and batches that straddle groups: many group buffers, with carries.
    s = ShardStream(build, batch_size=48, buffer_blocks=1, seed=4)
    it = iter(s.dataset(repeat=True))
    held = [next(it) for _ in range(3 * s.steps_per_epoch)]  # TF tensors, aliasing buffers
    want = [b for e in range(3) for b in ShardStream(build, batch_size=48, buffer_blocks=1,
                                                     seed=4).iter_numpy(e)]
    assert len(held) == len(want)
    for (gx, gy), (wx, wy) in zip(held, want, strict=True):
        np.testing.assert_array_equal(gx.numpy(), wx)
        np.testing.assert_array_equal(gy.numpy(), wy)
    src, stamp = read_stamp(np.concatenate([x.numpy() for x, _ in held]))
    for e in range(3):
        assert sorted(src[stamp == e].tolist()) == list(range(300))


def test_held_numpy_batches_are_never_overwritten(build: Path) -> None:
    s = ShardStream(build, batch_size=48, buffer_blocks=1, seed=4)
    held = [b for e in range(3) for b in s.iter_numpy(e)]  # views into group buffers
    copies = [(x.copy(), y.copy()) for x, y in held]
    for e in range(3, 6):  # keep reading: the pool must not hand out what `held` still sees
        list(s.iter_numpy(e))
    for (hx, hy), (cx, cy) in zip(held, copies, strict=True):
        np.testing.assert_array_equal(hx, cx)
        np.testing.assert_array_equal(hy, cy)


def test_group_buffers_are_recycled(build: Path) -> None:
    s = ShardStream(build, batch_size=32, buffer_blocks=1)
    for e in range(3):  # 15 groups; a consumer that lets go of each batch
        for _ in s.iter_numpy(e):
            pass
    assert 1 <= s._buffers.free_blocks() <= 3


def test_buffer_pool_reuses_only_released_blocks() -> None:
    pool = rawio.BufferPool((4, 4, 3), keep=2)
    a = pool.take(10)
    view = a[3:5]  # a slice outlives the array it came from
    del a
    b = pool.take(10)
    assert not np.shares_memory(view, b)  # still referenced: not handed out again
    assert b.ctypes.data % 64 == 0 and b.shape == (10, 4, 4, 3) and b.flags.writeable
    del view
    assert pool.free_blocks() == 1
    c = pool.take(10)
    assert pool.free_blocks() == 0 and c.ctypes.data % 64 == 0


def test_epoch_order_is_a_seeded_permutation_of_all_blocks() -> None:
    sizes, block = [150, 150, 40], 64
    order = stream_mod.epoch_order(sizes, block, seed=1, epoch=0)
    assert order == stream_mod.epoch_order(sizes, block, seed=1, epoch=0)  # deterministic
    samples = [(i, r) for i, a, b in order for r in range(a, b)]
    assert sorted(samples) == [(i, r) for i, n in enumerate(sizes) for r in range(n)]
    assert all(a % block == 0 and b - a <= block for _, a, b in order)  # chunk-aligned reads
    assert order != stream_mod.epoch_order(sizes, block, seed=1, epoch=1)  # another epoch
    assert order != stream_mod.epoch_order(sizes, block, seed=2, epoch=0)  # another seed
    unshuffled = stream_mod.epoch_order(sizes, block, None, 5)
    assert unshuffled == sorted(order)  # manifest order
    assert stream_mod.epoch_order([10, 70], [10, 32], None, 0) == [
        (0, 0, 10), (1, 0, 32), (1, 32, 64), (1, 64, 70)]  # a block size per shard
    with pytest.raises(ValueError, match="block"):
        stream_mod.epoch_order([10, 70], [32], 0, 0)


def test_scattered_reads_split_into_several_preadv(
    build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = list(ShardStream(build, batch_size=50, seed=5).iter_numpy(2))
    monkeypatch.setattr(rawio, "IOV_MAX", 16)  # a 64-image block takes 4 calls
    split = list(ShardStream(build, batch_size=50, seed=5).iter_numpy(2))
    for (ax, ay), (bx, by) in zip(whole, split, strict=True):
        np.testing.assert_array_equal(ax, bx)
        np.testing.assert_array_equal(ay, by)
