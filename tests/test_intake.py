"""Readers (AN2DL npz, MedMNIST npz, class folders), conversions and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_images

from frozenaug.common.errors import InputError
from frozenaug.data.intake import fingerprint, load_dataset, parse_classes, parse_size

# --- AN2DL npz ------------------------------------------------------------------------------


def test_an2dl_uint8_roundtrip(tiny_npz: Path) -> None:
    ds = load_dataset(tiny_npz, size=(12, 12))
    z = np.load(tiny_npz)
    assert ds.images.shape == (12, 12, 12, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, z["images"])
    np.testing.assert_array_equal(ds.labels, np.arange(12) % 3)
    assert ds.labels.dtype == np.int64
    assert ds.class_names == ["0", "1", "2"]
    assert ds.ids == [str(i) for i in range(12)]
    assert ds.official_split is None and ds.source == str(tiny_npz)


@pytest.mark.parametrize("kind", ["flat", "column", "onehot", "float_int"])
def test_an2dl_label_layouts(tmp_path: Path, kind: str) -> None:
    y = np.arange(6) % 3
    labels = {"flat": y.astype(np.uint8), "column": y.reshape(-1, 1),
              "onehot": np.eye(3, dtype=np.float32)[y], "float_int": y.astype(np.float64)}[kind]
    np.savez(tmp_path / "d.npz", images=make_images(6), labels=labels)
    np.testing.assert_array_equal(load_dataset(tmp_path / "d.npz", size=(12, 12)).labels, y)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_an2dl_float_images(tmp_path: Path, scale: float) -> None:
    imgs = make_images(3)
    np.savez(tmp_path / "f.npz", images=imgs.astype(np.float32) / 255.0 * scale,
             labels=np.array([0, 1, 1]))
    ds = load_dataset(tmp_path / "f.npz", size=(12, 12))
    assert np.abs(ds.images.astype(int) - imgs).max() <= 1


def test_resize_gray_rgba_and_class_names_key(tmp_path: Path) -> None:
    imgs = make_images(4, 20, 30)
    np.savez(tmp_path / "g.npz", images=imgs[..., 0], labels=[0, 1, 0, 1],
             class_names=np.array(["a", "b"]))
    ds = load_dataset(tmp_path / "g.npz", size=(10, 15))
    assert ds.images.shape == (4, 10, 15, 3) and ds.class_names == ["a", "b"]
    assert (ds.images[..., 0] == ds.images[..., 2]).all()  # gray copied to every channel
    expected = cv2.resize(imgs[0, ..., 0], (15, 10), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ds.images[0, ..., 1], expected)
    rgba = np.concatenate([imgs, np.full((4, 20, 30, 1), 7, np.uint8)], axis=-1)
    np.savez(tmp_path / "a.npz", images=rgba, labels=[0, 1, 0, 1])
    np.testing.assert_array_equal(load_dataset(tmp_path / "a.npz", size=(20, 30)).images, imgs)


def test_class_names_argument_overrides(tiny_npz: Path) -> None:
    ds = load_dataset(tiny_npz, size=(12, 12), class_names=["x", "y", "z"])
    assert ds.class_names == ["x", "y", "z"]


# --- MedMNIST npz ---------------------------------------------------------------------------


def _medmnist(path: Path, gray: bool) -> None:
    parts = {"train": 6, "val": 3, "test": 3}
    arrays = {}
    for k, (split, n) in enumerate(parts.items()):
        im = make_images(n, 14, 14, seed=k)
        arrays[f"{split}_images"] = im[..., 0] if gray else im
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("gray", [False, True])
def test_medmnist(tmp_path: Path, gray: bool) -> None:
    _medmnist(tmp_path / "m.npz", gray)
    ds = load_dataset(tmp_path / "m.npz", size=(14, 14), medmnist_split=True)
    assert ds.images.shape == (12, 14, 14, 3)
    assert ds.official_split.tolist() == ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    np.testing.assert_array_equal(ds.labels, np.r_[np.arange(6) % 3, [0, 1, 2], [0, 1, 2]])
    assert load_dataset(tmp_path / "m.npz", size=(14, 14)).official_split is None


# --- class folders --------------------------------------------------------------------------


def _write(path: Path, img: np.ndarray, params: tuple[int, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img, params)


def test_folders_all_formats(tmp_path: Path) -> None:
    imgs = make_images(7, 16, 16)
    _write(tmp_path / "b" / "1.png", imgs[0][..., ::-1])
    _write(tmp_path / "b" / "2.bmp", imgs[1][..., ::-1])
    _write(tmp_path / "b" / "3.tif", imgs[2][..., ::-1])
    _write(tmp_path / "b" / "4.webp", imgs[6][..., ::-1], (cv2.IMWRITE_WEBP_QUALITY, 101))
    _write(tmp_path / "a" / "gray.png", imgs[3][..., 0])
    rgba = np.concatenate([imgs[4][..., ::-1], np.full((16, 16, 1), 9, np.uint8)], axis=-1)
    _write(tmp_path / "a" / "rgba.png", rgba)
    _write(tmp_path / "a" / "deep.png", imgs[5][..., ::-1].astype(np.uint16) * 257)
    _write(tmp_path / "a" / "big.jpg", cv2.resize(imgs[0], (32, 32))[..., ::-1])
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path, size=(16, 16))
    assert ds.class_names == ["a", "b"]
    assert ds.ids == ["a/big.jpg", "a/deep.png", "a/gray.png", "a/rgba.png",
                      "b/1.png", "b/2.bmp", "b/3.tif", "b/4.webp"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(ds.images[1], imgs[5])  # 16-bit scaled back exactly
    np.testing.assert_array_equal(ds.images[2], np.repeat(imgs[3][..., :1], 3, axis=-1))
    np.testing.assert_array_equal(ds.images[3], imgs[4])  # RGBA: alpha dropped, RGB order
    np.testing.assert_array_equal(ds.images[4:7], imgs[:3])
    np.testing.assert_array_equal(ds.images[7], imgs[6])  # lossless WebP
    assert ds.source == str(tmp_path)


def test_folders_class_names_order(tmp_path: Path) -> None:
    imgs = make_images(2, 8, 8)
    _write(tmp_path / "a" / "x.png", imgs[0])
    _write(tmp_path / "b" / "y.png", imgs[1])
    ds = load_dataset(tmp_path, size=(8, 8), class_names=["b", "a"])
    assert ds.class_names == ["b", "a"] and ds.ids == ["b/y.png", "a/x.png"]
    np.testing.assert_array_equal(ds.labels, [0, 1])


def test_folders_unreadable_skipped_or_strict(tmp_path: Path, capsys) -> None:
    imgs = make_images(3, 8, 8)
    for i, c in enumerate("aab"):
        _write(tmp_path / c / f"{i}.png", imgs[i])
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    ds = load_dataset(tmp_path, size=(8, 8))
    assert len(ds) == 3 and ds.skipped == [str(tmp_path / "a" / "broken.png")]
    assert "skipped 1 unreadable" in capsys.readouterr().err
    with pytest.raises(InputError, match="broken.png: unreadable image"):
        load_dataset(tmp_path, size=(8, 8), strict=True)


# --- bad input ------------------------------------------------------------------------------


def _bad_npz(tmp_path: Path, case: str) -> tuple[Path, str]:
    """Write one broken input; return its path and a pattern the error must match."""
    p = tmp_path / "bad.npz"
    im, y = make_images(4, 8, 8), np.array([0, 1, 0, 1])
    if case == "garbage":
        p.write_bytes(b"this is not a zip file")
        return p, "unreadable npz"
    arrays: dict = {"images": im, "labels": y}
    pattern = {
        "no_keys": "neither 'images'", "missing_labels": "missing key 'labels'",
        "int_images": "images: dtype int32", "rank": "images: shape",
        "length": "labels: 3 labels for 4 images", "range": r"labels\[1\]: label 5 out of range",
        "negative": r"labels\[2\]: label -1 is negative", "fraction": r"labels\[0\]: non-integer",
        "nan_label": r"labels\[3\]: NaN", "nan_image": r"images\[2\]: NaN or inf",
        "float_range": "float values in", "empty_class": r"class 1 \('1'\) has no images",
        "onehot": r"labels\[1\]: not one-hot", "medmnist_key": "missing key 'val_images'",
        "str_labels": "labels: dtype",
    }[case]
    if case == "no_keys":
        arrays = {"pixels": im}
    elif case == "missing_labels":
        del arrays["labels"]
    elif case == "int_images":
        arrays["images"] = im.astype(np.int32)
    elif case == "rank":
        arrays["images"] = im[:, :, :, :2]
    elif case == "length":
        arrays["labels"] = y[:3]
    elif case == "range":  # out of range of the stored class names
        arrays["labels"] = np.array([0, 5, 0, 1])
        arrays["class_names"] = np.array(["a", "b"])
    elif case == "negative":
        arrays["labels"] = np.array([0, 1, -1, 1])
    elif case == "fraction":
        arrays["labels"] = np.array([0.5, 1, 0, 1])
    elif case == "nan_label":
        arrays["labels"] = np.array([0, 1, 0, np.nan])
    elif case == "nan_image":
        f = im.astype(np.float32)
        f[2, 1, 1, 0] = np.inf
        arrays["images"] = f
    elif case == "float_range":
        arrays["images"] = im.astype(np.float32) * 2
    elif case == "empty_class":
        arrays["labels"] = np.array([0, 2, 0, 2])
    elif case == "onehot":
        arrays["labels"] = np.array([[1, 0], [1, 1], [0, 1], [1, 0]])
    elif case == "medmnist_key":
        arrays = {"train_images": im, "train_labels": y}
    elif case == "str_labels":
        arrays["labels"] = np.array(["a", "b", "a", "b"])
    np.savez(p, **arrays)
    return p, pattern


BAD_NPZ = ["garbage", "no_keys", "missing_labels", "int_images", "rank", "length", "range",
           "negative", "fraction", "nan_label", "nan_image", "float_range", "empty_class",
           "onehot", "medmnist_key", "str_labels"]


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_raises_one_line(tmp_path: Path, case: str) -> None:
    path, pattern = _bad_npz(tmp_path, case)
    with pytest.raises(InputError, match=pattern) as e:
        load_dataset(path, size=(8, 8))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))


@pytest.mark.parametrize("case", ["garbage", "missing_labels", "range", "nan_image",
                                  "empty_class"])
def test_bad_npz_cli_exit_2_writes_nothing(tmp_path: Path, case: str, run_cli) -> None:
    path, _ = _bad_npz(tmp_path, case)
    for cmd in ("scan", "clean"):
        out = tmp_path / f"out-{cmd}"
        code, _, err = run_cli(cmd, path, "--out", out, "--size", "8")
        assert code == 2 and err.startswith("frozenaug-build: error: ")
        assert err.count("\n") == 1 and not out.exists()


def test_range_against_class_names(tiny_npz: Path) -> None:
    with pytest.raises(InputError, match=r"label 2 out of range 0..1 \(2 class names\)"):
        load_dataset(tiny_npz, class_names=["a", "b"])


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "root").mkdir()
    with pytest.raises(InputError, match="no class sub-folders"):
        load_dataset(tmp_path / "root")
    _write(tmp_path / "root" / "a" / "1.png", make_images(1, 8, 8)[0])
    (tmp_path / "root" / "empty").mkdir()
    with pytest.raises(InputError, match="class 'empty' has no images"):
        load_dataset(tmp_path / "root")
    with pytest.raises(InputError, match="no folder for class"):
        load_dataset(tmp_path / "root", class_names=["a", "zzz"])
    with pytest.raises(InputError, match="not among the class names"):
        load_dataset(tmp_path / "root", class_names=["a"])
    (tmp_path / "root" / "empty" / "x.png").write_bytes(b"broken")
    with pytest.raises(InputError, match="'empty' has no readable images"):
        load_dataset(tmp_path / "root")
    with pytest.raises(InputError, match="needs a MedMNIST npz"):
        load_dataset(tmp_path / "root", medmnist_split=True)


def test_medmnist_split_on_an2dl(tiny_npz: Path) -> None:
    with pytest.raises(InputError, match="needs a MedMNIST npz"):
        load_dataset(tiny_npz, medmnist_split=True)


# --- parsers and fingerprint ----------------------------------------------------------------


def test_parse_size() -> None:
    assert parse_size(None) == (96, 96)
    assert parse_size("64") == (64, 64)
    assert parse_size("64x80") == (64, 80)
    for bad in ("", "0", "x", "1x2x3", "-4", "big"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_parse_classes(tmp_path: Path) -> None:
    assert parse_classes(None) is None
    assert parse_classes("a, b,c") == ["a", "b", "c"]
    f = tmp_path / "names.txt"
    f.write_text("x\n\ny\n")
    assert parse_classes(str(f)) == ["x", "y"]
    with pytest.raises(InputError, match="duplicate"):
        parse_classes("a,b,a")
    with pytest.raises(InputError, match="no class names"):
        parse_classes(" , ")


def test_fingerprint(tiny_npz: Path) -> None:
    a = load_dataset(tiny_npz, size=(12, 12))
    b = load_dataset(tiny_npz, size=(12, 12))
    assert fingerprint(a) == fingerprint(b) and len(fingerprint(a)) == 64
    b.labels[0] = 2
    assert fingerprint(a) != fingerprint(b)
    c = load_dataset(tiny_npz, size=(12, 12), class_names=["x", "y", "z"])
    assert fingerprint(c) != fingerprint(a)
    c.images = np.array(c.images)  # the intake's memory map is read-only
    c.images[3, 0, 0, 0] ^= 1
    assert fingerprint(c) != fingerprint(load_dataset(tiny_npz, size=(12, 12),
                                                      class_names=["x", "y", "z"]))


def test_npy_is_not_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="expected an npz archive"):
        load_dataset(tmp_path / "x.npy")


def test_sizes_claimed_by_npz_headers_are_checked_before_allocating(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("images.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 12, 12, 3)})
            f.write(bytes(64))
        with z.open("labels.npy", "w") as f:
            np.save(f, np.zeros(4, np.int64))
    with pytest.raises(InputError, match=r"images: header claims shape \(1000000000000,"):
        load_dataset(path, size=(12, 12))


def test_a_huge_label_is_refused_before_naming_classes(tmp_path: Path) -> None:
    np.savez(tmp_path / "l.npz", images=make_images(4), labels=[0, 1, 0, 2**62])
    with pytest.raises(InputError, match=r"labels\[3\]: label 4611686018427387904: 4 images"):
        load_dataset(tmp_path / "l.npz", size=(12, 12))


def test_disk_space_is_checked_before_the_memory_map_is_made(tmp_path: Path,
                                                            monkeypatch) -> None:
    from frozenaug.common import disk

    np.savez(tmp_path / "d.npz", images=make_images(4), labels=[0, 1, 0, 1])
    monkeypatch.setattr(disk, "free_bytes", lambda folder: 2**20)  # 4 x 8192 x 8192 x 3 > 1 MiB
    with pytest.raises(InputError, match=r"^\S+/out: the memory map of \S+d\.npz's 4 images of "
                       r"8192x8192: not enough disk space: needs about 768\.0 MiB"):
        load_dataset(tmp_path / "d.npz", size=(8192, 8192), spill=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_memory_is_checked_where_images_are_held_in_memory(tmp_path: Path) -> None:
    from unittest import mock

    from frozenaug.data.intake import load_unlabelled

    np.savez(tmp_path / "u.npz", images=make_images(4))
    with mock.patch("frozenaug.data.arrays.available_memory", return_value=2**20), \
            pytest.raises(InputError, match="memory"):
        load_unlabelled(tmp_path / "u.npz", size=(8192, 8192))


@pytest.mark.parametrize("names, words", [(["x", "x"], "duplicate"), (["x", ""], "empty")])
def test_npz_class_names_must_be_distinct_and_non_empty(tmp_path: Path, names, words) -> None:
    np.savez(tmp_path / "n.npz", images=make_images(4), labels=[0, 1, 0, 1],
             class_names=np.array(names))
    with pytest.raises(InputError, match=words):
        load_dataset(tmp_path / "n.npz", size=(12, 12))


def test_max_classes_allows_absent_classes_and_bounds_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "e.npz", images=make_images(4), labels=[0, 2, 0, 2])  # no class 1
    with pytest.raises(InputError, match="class 1"):
        load_dataset(tmp_path / "e.npz", size=(12, 12))
    ds = load_dataset(tmp_path / "e.npz", size=(12, 12), max_classes=4)
    assert ds.class_names == ["0", "1", "2"]
    with pytest.raises(InputError, match=r"out of range 0\.\.1"):
        load_dataset(tmp_path / "e.npz", size=(12, 12), max_classes=2)
