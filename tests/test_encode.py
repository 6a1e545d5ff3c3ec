"""Encoded shards (build --encode): round trips, determinism, damage, schema-1 builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from frozenaug import format as fmt
from frozenaug.builder.cli import main
from frozenaug.common.atomic import write_json
from frozenaug.common.errors import InputError
from frozenaug.format import codec
from frozenaug.trainer.read.stream import ShardStream

ENCODINGS = ("raw", "png", "jpeg:90", "webp", "webp:80")


def _smooth(n: int, size: int, seed: int) -> np.ndarray:
    """Photo-like images (smooth, not noise), so lossy codecs behave as on real data."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC)
                     for c in coarse]).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """One 2-epoch light-policy build of the same 36 images (24x24, 3 classes) per encoding,
    shards of 10 (so a frozen epoch has a short last shard); plus its input under "input"."""
    root = tmp_path_factory.mktemp("enc")
    inp = root / "in.npz"
    np.savez(inp, images=_smooth(36, 24, 0), labels=np.arange(36) % 3)
    out = {"input": inp}
    for enc in ENCODINGS:
        out[enc] = root / enc.replace(":", "-")
        assert main(["build", str(inp), "--out", str(out[enc]), "--size", "24", "--epochs", "2",
                     "--shard-size", "10", "--policy", "light", "--no-clean", "--jobs", "1",
                     "--encode", enc]) == 0
    return out


def _read(build: Path, split: str, shuffle: bool, threads: int = 2) -> np.ndarray:
    s = ShardStream(build, split, batch_size=7, shuffle=shuffle, seed=3, buffer_blocks=2,
                    decode_threads=threads)
    return np.concatenate([x for x, _ in s.iter_numpy(1)])


def test_parse_encoding() -> None:
    canon = {"raw": "raw", "PNG": "png", "jpeg": "jpeg:95", "jpeg:7": "jpeg:7", "webp": "webp",
             "webp:100": "webp:100", "webp:101": "webp", " jpeg:100 ": "jpeg:100"}
    assert {k: str(fmt.parse_encoding(k)) for k in canon} == canon
    for bad in ("gif", "jpeg:0", "jpeg:101", "webp:0", "png:3", "raw:1", "jpeg:", "jpeg:9.5", 95):
        with pytest.raises(ValueError):
            fmt.parse_encoding(bad)
    assert [fmt.split_encoding("jpeg:90", s) for s in fmt.SPLITS] == ["jpeg:90", "raw", "raw"]
    assert [fmt.split_encoding("webp", s) for s in fmt.SPLITS] == ["webp"] * 3


@pytest.mark.parametrize("enc", ENCODINGS[1:])
def test_round_trip_through_build_and_stream(builds, enc: str) -> None:
    """The same frozen pixels as the raw build, in the same (shuffled) order: exact for the
    lossless encodings, close for the lossy ones; val/test exact always."""
    m = fmt.load_manifest(builds[enc])
    assert m.encoding == enc and m.raw["config"]["encode"] == enc
    raw = _read(builds["raw"], "train", True)
    got = _read(builds[enc], "train", True, threads=3)
    assert got.shape == raw.shape
    if fmt.parse_encoding(enc).lossless:
        np.testing.assert_array_equal(got, raw)
    else:
        err = np.abs(got.astype(np.int16) - raw).mean()
        assert 0 < err < 6, err
    for split in ("val", "test"):
        np.testing.assert_array_equal(_read(builds[enc], split, False),
                                      _read(builds["raw"], split, False))
    np.testing.assert_array_equal(_read(builds[enc], "train", True, threads=1), got)


def test_encoded_shard_layout(builds) -> None:
    m = fmt.load_manifest(builds["jpeg:90"])
    for s in m.shards:
        with fmt.open_shard(m, s) as f:
            assert f.attrs[fmt.ATTR_ENCODING] == m.encoding_of(s)
            assert (fmt.DS_IMAGES in f) == (s.split != "train")
            if s.split == "train":
                off = f[fmt.DS_IMAGE_OFFSETS][()]
                assert off.shape == (s.samples + 1,) and off[-1] == len(f[fmt.DS_IMAGE_BYTES])
                assert f[fmt.DS_IMAGE_BYTES].chunks is None  # one byte range per block
    raw_bytes = sum((builds["raw"] / s.path).stat().st_size for s in m.shards_of("train"))
    jpeg_bytes = sum(m.path_of(s).stat().st_size for s in m.shards_of("train"))
    assert jpeg_bytes < 0.8 * raw_bytes  # 24x24: JPEG headers are a third of each file


def test_encoded_build_bytes_do_not_depend_on_jobs(builds, tmp_path) -> None:
    out = tmp_path / "j2"
    assert main(["build", str(builds["input"]), "--out", str(out), "--size", "24", "--epochs",
                 "2", "--shard-size", "10", "--policy", "light", "--no-clean", "--jobs", "2",
                 "--encode", "jpeg:90"]) == 0
    assert ((out / fmt.MANIFEST_NAME).read_bytes()
            == (builds["jpeg:90"] / fmt.MANIFEST_NAME).read_bytes())
    m = fmt.load_manifest(out)
    assert all(fmt.sha256_file(m.path_of(s)) == s.sha256 for s in m.shards)


def _rewrite_first_image(shard: Path, new: bytes) -> None:
    """Replace image 0 of an encoded shard with ``new`` (a valid file layout around it)."""
    with h5py.File(shard, "r+") as f:
        data, off = f[fmt.DS_IMAGE_BYTES][()], f[fmt.DS_IMAGE_OFFSETS][()]
        rest = data[off[1]:]
        del f[fmt.DS_IMAGE_BYTES], f[fmt.DS_IMAGE_OFFSETS]
        f[fmt.DS_IMAGE_BYTES] = np.concatenate([np.frombuffer(new, np.uint8), rest])
        f[fmt.DS_IMAGE_OFFSETS] = np.concatenate([[0], off[1:] - off[1] + len(new)])


@pytest.mark.parametrize("damage", ["garbage", "wrong_size"])
def test_verify_and_reader_name_a_corrupt_encoded_image(builds, tmp_path, capsys,
                                                        damage: str) -> None:
    build = tmp_path / "b"
    shutil.copytree(builds["png"], build)
    m = fmt.load_manifest(build)
    shard = m.shards_of("train", 1)[1]
    if damage == "garbage":
        new = b"\x89PNG not really" + bytes(200)
    else:
        new = cv2.imencode(".png", np.zeros((16, 24, 3), np.uint8))[1].tobytes()
    _rewrite_first_image(m.path_of(shard), new)
    # a wrong size is seen in the PNG header, before decoding (a bomb is never decoded)
    why = "does not decode as png" if damage == "garbage" else "states 16x24 in its PNG header"
    # The sha256 as if the damage came with the build: only decoding can find it.
    raw = json.loads((build / fmt.MANIFEST_NAME).read_text())
    raw["shards"][m.shards.index(shard)]["sha256"] = fmt.sha256_file(m.path_of(shard))
    write_json(build / fmt.MANIFEST_NAME, raw)
    assert main(["verify", str(build)]) == 2
    err = capsys.readouterr().err
    assert f"{m.path_of(shard)}: 1 of {shard.samples} png images unreadable: image 0 {why}" in err
    s = ShardStream(build, "train", batch_size=4)  # structure fine: opens
    list(s.iter_numpy(0))
    with pytest.raises(InputError, match=f"{m.path_of(shard)}: image 0 of {shard.samples} {why}"):
        list(s.iter_numpy(1))


def test_preview_and_inspect_of_an_encoded_build(builds, tmp_path, capsys) -> None:
    png = tmp_path / "grid.png"
    assert main(["preview", str(builds["jpeg:90"]), "--out", str(png), "--n", "3"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", str(builds["jpeg:90"])]) == 0
    assert "stored jpeg:90 (train), raw (val/test)" in capsys.readouterr().out


def test_schema_1_build_still_reads(builds, tmp_path, capsys) -> None:
    """A build as the previous version wrote it: schema 1, no encoding field or attribute."""
    build = tmp_path / "old"
    shutil.copytree(builds["raw"], build)
    raw = json.loads((build / fmt.MANIFEST_NAME).read_text())
    raw["schema_version"] = 1
    del raw["encoding"], raw["config"]["encode"]
    for s in raw["shards"]:
        with h5py.File(build / s["path"], "r+") as f:
            f.attrs[fmt.ATTR_SCHEMA_VERSION] = 1
            del f.attrs[fmt.ATTR_ENCODING]
        s["sha256"] = fmt.sha256_file(build / s["path"])
    write_json(build / fmt.MANIFEST_NAME, raw)
    assert fmt.load_manifest(build).encoding == "raw"
    assert main(["verify", str(build)]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(_read(build, "train", True), _read(builds["raw"], "train", True))
    # ...and a schema-1 shard inside a schema-2 manifest is refused, naming the attributes.
    raw["schema_version"], raw["encoding"] = 2, "raw"
    write_json(build / fmt.MANIFEST_NAME, raw)
    with pytest.raises(InputError, match="attribute schema_version is 1, manifest says 2"):
        ShardStream(build, "val")


def test_manifest_encoding_checked(builds, tmp_path) -> None:
    build = tmp_path / "b"
    shutil.copytree(builds["png"], build)
    raw = json.loads((build / fmt.MANIFEST_NAME).read_text())
    for bad in ("jpeg", "gif", None):  # not canonical, unknown, missing
        raw["encoding"] = bad
        write_json(build / fmt.MANIFEST_NAME, raw)
        with pytest.raises(InputError, match="encoding"):
            fmt.load_manifest(build)


def test_codec_round_trip_and_bounds(monkeypatch) -> None:
    x = _smooth(5, 33, 1)
    noise = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    for enc in ENCODINGS[1:]:
        data, off = codec.encode_images(x, enc)
        assert off[0] == 0 and off[-1] == len(data) and np.all(np.diff(off) > 0)
        assert codec.encode_images(x, enc)[0].tobytes() == data.tobytes()  # deterministic
        out = np.zeros_like(x)
        assert codec.decode_rows(data, off, range(5), out, np.arange(5)[::-1]) is None
        if fmt.parse_encoding(enc).lossless:
            np.testing.assert_array_equal(out[::-1], x)
        worst = np.diff(codec.encode_images(noise, enc)[1]).max()
        assert worst <= codec.bytes_bound(noise.shape[1:], enc)
        assert codec.bytes_estimate(x, enc) <= codec.bytes_bound(x.shape[1:], enc)
        with monkeypatch.context() as mp:  # an OpenCV without IMREAD_COLOR_RGB: the same pixels
            mp.setattr(codec, "_IMREAD_RGB", None)
            again = np.zeros_like(x)
            codec.decode_rows(data, off, range(5), again, np.arange(5)[::-1])
            np.testing.assert_array_equal(again, out)


def test_tf_dataset_of_an_encoded_build_matches_iter_numpy(builds) -> None:
    s = ShardStream(builds["webp:80"], "train", batch_size=8, shuffle=True, seed=1)
    got = [x.numpy() for x, _ in s.dataset(initial_epoch=1)]
    want = [x for x, _ in s.iter_numpy(1)]
    assert len(got) == len(want) == s.steps_per_epoch
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
