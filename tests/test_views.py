"""ViewStream: V views of each train row from V distinct frozen epochs, coverage, determinism,
the tf.data layout, only V epochs open, encoded shards, refusals."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from build_factory import make_build, read_stamp

from frozenaug import format as fmt
from frozenaug.common.errors import InputError
from frozenaug.trainer.read.blocks import BlockReader
from frozenaug.trainer.read.stream import ShardStream
from frozenaug.trainer.read.views import ViewStream

# 300 train rows per epoch in shards of 150 (blocks of 64, 64, 22): rows of a view come from
# several shards and chunks.
BIG = dict(n_per_class=100, num_classes=3, shard_size=150, size=8)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_build(tmp_path_factory.mktemp("v"), epochs=4, **BIG)


def _stored(build: Path, epoch: int) -> dict[int, np.ndarray]:
    """source_index -> stored image of a frozen epoch, straight from the shards."""
    m = fmt.load_manifest(build)
    out = {}
    for s in m.shards_of("train", epoch):
        with h5py.File(m.path_of(s)) as f:
            out.update(zip(f[fmt.DS_SOURCE_INDEX][()].tolist(), f[fmt.DS_IMAGES][()],
                           strict=True))
    return out


def _epoch(v: ViewStream, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    batches = list(v.iter_numpy(epoch))
    assert len(batches) == v.steps_per_epoch
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@pytest.mark.parametrize("views", [2, 3])
def test_views_are_the_same_rows_from_distinct_frozen_epochs(build: Path, views: int) -> None:
    s = ShardStream(build, batch_size=32, seed=1)
    v = ViewStream(s, views)
    stored = {e: _stored(build, e) for e in range(4)}
    for e in range(5):
        x, y = _epoch(v, e)
        assert x.shape == (300, views, 8, 8, 3) and y.shape == (300, 3)
        frozen = v.view_epochs(e)
        assert frozen[0] == e % 4 and len(set(frozen)) == views
        src = read_stamp(x[:, 0])[0]
        assert sorted(src.tolist()) == list(range(300))  # every train row once per epoch
        # the anchor is exactly what the plain stream reads for this epoch
        plain = np.concatenate([b for b, _ in s.iter_numpy(e)])
        np.testing.assert_array_equal(x[:, 0], plain)
        for k, f in enumerate(frozen):
            got_src, stamp = read_stamp(x[:, k])
            np.testing.assert_array_equal(got_src, src)
            assert set(stamp.tolist()) == {f}
            # whole rows, bit for bit (not only the stamp pixel)
            np.testing.assert_array_equal(x[:, k], np.stack([stored[f][i] for i in src]))
        assert (y.argmax(1) == src // 100).all() and (y.max(1) == 1).all()  # class = src // 100


def test_deterministic_and_seeded(build: Path) -> None:
    a = _epoch(ViewStream(ShardStream(build, batch_size=32, seed=1), 2), 3)[0]
    b = _epoch(ViewStream(ShardStream(build, batch_size=32, seed=1), 2), 3)[0]
    np.testing.assert_array_equal(a, b)
    c = ViewStream(ShardStream(build, batch_size=32, seed=2), 2)
    assert not np.array_equal(_epoch(c, 3)[0], a)
    # the pairing of frozen epochs varies across epochs, not one fixed partner per epoch
    v = ViewStream(ShardStream(build, batch_size=32, seed=1), 2)
    assert len({tuple(v.view_epochs(e)) for e in range(40)}) > 4


def test_only_the_views_epochs_are_open(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = ShardStream(build, batch_size=32, seed=0)
    v = ViewStream(s, 2)
    opened: list[int] = []
    real = BlockReader.open

    def spy(self, stack, entry, sources=False):  # noqa: ANN001, ANN202
        opened.append(entry.epoch)
        return real(self, stack, entry, sources)

    monkeypatch.setattr(BlockReader, "open", spy)
    _epoch(v, 1)
    assert set(opened) == set(v.view_epochs(1)) and len(opened) == 4  # 2 epochs x 2 shards


def test_dataset_interleaves_views_and_repeats_labels(build: Path) -> None:
    v = ViewStream(ShardStream(build, batch_size=32, seed=1, drop_remainder=True), 3)
    ref = list(v.iter_numpy(2))
    got = list(v.dataset(initial_epoch=2).as_numpy_iterator())
    assert len(got) == len(ref) == v.steps_per_epoch == 9
    for (x, y), (rx, ry) in zip(got, ref, strict=True):
        assert x.shape == (96, 8, 8, 3) and y.shape == (96, 3)
        np.testing.assert_array_equal(x.reshape(32, 3, 8, 8, 3), rx)
        np.testing.assert_array_equal(y, np.repeat(ry, 3, axis=0))


def test_encoded_shards_give_the_raw_builds_views(tmp_path: Path) -> None:
    from frozenaug.builder.cli import main

    inp = tmp_path / "in.npz"
    rng = np.random.default_rng(0)
    np.savez(inp, images=rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(30) % 3)
    views = {}
    for enc in ("raw", "png"):
        out = tmp_path / enc
        assert main(["build", str(inp), "--out", str(out), "--size", "16", "--epochs", "3",
                     "--shard-size", "7", "--policy", "light", "--no-clean", "--jobs", "1",
                     "--encode", enc]) == 0
        v = ViewStream(ShardStream(out, batch_size=5, seed=4, decode_threads=2), 3)
        views[enc] = _epoch(v, 1)[0]
    np.testing.assert_array_equal(views["png"], views["raw"])
    assert not np.array_equal(views["raw"][:, 0], views["raw"][:, 1])  # views do differ


def test_refusals(build: Path, tmp_path: Path) -> None:
    two = make_build(tmp_path / "k2", epochs=2, n_per_class=4)
    with pytest.raises(InputError, match="3 views of each image need 3 frozen epochs") as e:
        ViewStream(ShardStream(two), 3)
    assert "\n" not in str(e.value)
    ViewStream(ShardStream(two), 2)  # K == V is enough
    soft = make_build(tmp_path / "soft", epochs=2, n_per_class=4, soft_labels=True)
    with pytest.raises(InputError, match="--drop-family mix"):
        ViewStream(ShardStream(soft), 2)
    with pytest.raises(ValueError, match="train"):
        ViewStream(ShardStream(build, "val", shuffle=False), 2)
