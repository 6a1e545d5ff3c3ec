"""The out-of-core intake: images in an unnamed memory-mapped file, equal to an in-memory read,
nothing left behind however the intake or the build ends, mapped pages given back."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_images

from frozenaug.builder.cli import main as build_main
from frozenaug.common.errors import InputError
from frozenaug.data import folders
from frozenaug.data.imagefile import ImageFile, drop_pages, iter_rows, read_rows
from frozenaug.data.intake import fingerprint, load_dataset


def reference_fingerprint(images: np.ndarray, labels: np.ndarray, names: list[str]) -> str:
    """The fingerprint as the in-memory intake computed it, in one piece."""
    h = hashlib.sha256()
    h.update(json.dumps([list(images.shape), names]).encode())
    h.update(np.asarray(labels, "<i8").tobytes())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()


def _npz(path: Path, compressed: bool, **arrays: np.ndarray) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    with zipfile.ZipFile(path) as z:  # the layout the case is about
        kinds = {i.compress_type for i in z.infolist()}
    assert kinds == {zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED}
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_stored_or_deflated_equals_the_in_memory_read(tmp_path: Path, compressed: bool,
                                                          monkeypatch) -> None:
    # many chunks, rows split across
    monkeypatch.setattr("frozenaug.data.arrays._CHUNK_BYTES", 1000)
    imgs, labels = make_images(40, 14, 10), np.arange(40) % 3
    path = _npz(tmp_path / "d.npz", compressed, images=imgs, labels=labels)
    spill = tmp_path / "spill"
    spill.mkdir()
    ds = load_dataset(path, size=(14, 10), spill=spill)
    assert isinstance(ds.images, np.memmap) and not ds.images.flags.writeable
    np.testing.assert_array_equal(ds.images, imgs)
    np.testing.assert_array_equal(ds.labels, labels)
    assert fingerprint(ds) == reference_fingerprint(imgs, labels, ["0", "1", "2"])
    assert ds.ids == [str(i) for i in range(40)] and ds.ids[-1] == "39"
    assert _files(spill) == []  # the file has no name
    assert os.fstat(ds.store.fd).st_dev == os.stat(spill).st_dev  # on the spill folder's disk


def test_resized_and_medmnist_gray_equal_the_in_memory_read(tmp_path: Path) -> None:
    parts = {s: make_images(n, 20, 20, seed=k)[..., 0]
             for k, (s, n) in enumerate({"train": 7, "val": 3, "test": 4}.items())}
    labels = {s: (np.arange(len(v)) % 2).reshape(-1, 1) for s, v in parts.items()}
    path = _npz(tmp_path / "m.npz", True, **{f"{s}_images": v for s, v in parts.items()},
                **{f"{s}_labels": v for s, v in labels.items()})
    ds = load_dataset(path, size=(8, 12), spill=tmp_path)
    ref = np.stack([np.repeat(cv2.resize(g, (12, 8), interpolation=cv2.INTER_AREA)[..., None],
                              3, axis=-1) for g in np.concatenate(list(parts.values()))])
    np.testing.assert_array_equal(ds.images, ref)
    y = np.concatenate([v.ravel() for v in labels.values()])
    assert fingerprint(ds) == reference_fingerprint(ref, y, ["0", "1"])


def test_folders_with_unreadable_files_equal_the_in_memory_read(tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.setattr(folders, "FOLDER_BATCH", 3)  # gaps inside and across batches
    imgs = make_images(11, 9, 9)
    root = tmp_path / "in"
    names, want = [], []
    for i, img in enumerate(imgs):
        c = "ab"[i % 2]
        (root / c).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / c / f"{i:02d}.png"), img[..., ::-1])
        names.append((c, f"{i:02d}.png", i))
    for c, bad in (("a", "00b.png"), ("a", "05b.png"), ("b", "99.png")):
        (root / c / bad).write_bytes(b"broken")
    ds = load_dataset(root, size=(9, 9), spill=tmp_path / "spill")  # spill need not exist
    order = sorted(names)
    want = np.stack([imgs[i] for _, _, i in order])
    labels = np.array([0 if c == "a" else 1 for c, _, _ in order])
    np.testing.assert_array_equal(ds.images, want)
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.ids == [f"{c}/{n}" for c, n, _ in order] and len(ds.skipped) == 3
    assert fingerprint(ds) == reference_fingerprint(want, labels, ["a", "b"])
    assert _files(tmp_path) == ["in"]


def test_without_o_tmpfile_a_temporary_is_unlinked_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    imgs = make_images(5)
    path = _npz(tmp_path / "d.npz", False, images=imgs, labels=[0, 1, 0, 1, 0])
    ds = load_dataset(path, size=(12, 12), spill=tmp_path)
    assert not ds.store.linkable and _files(tmp_path) == ["d.npz"]
    np.testing.assert_array_equal(ds.images, imgs)
    ds.store.save_as(tmp_path / "copy.npy")  # a copy, through an atomic temporary
    np.testing.assert_array_equal(np.load(tmp_path / "copy.npy"), imgs)
    assert _files(tmp_path) == ["copy.npy", "d.npz"]


def test_save_as_links_the_file_without_a_copy(tmp_path: Path) -> None:
    f = ImageFile(4, (3, 2), tmp_path, "x")
    f[0:2] = np.full((2, 3, 2, 3), 7, np.uint8)
    f[3] = np.full((3, 2, 3), 9, np.uint8)
    if not f.linkable:
        pytest.skip("this file system has no O_TMPFILE")
    f.save_as(tmp_path / "a.npy")
    assert os.stat(tmp_path / "a.npy").st_ino == os.fstat(f.fd).st_ino
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (4, 3, 2, 3) and (a[:2] == 7).all() and (a[2] == 0).all()
    assert (a[3] == 9).all()
    f.keep_rows(np.array([1, 3]))  # the gap closed, the header and length follow
    np.testing.assert_array_equal(f.array()[:, 0, 0, 0], [7, 9])
    assert np.load(tmp_path / "a.npy").shape == (2, 3, 2, 3)


def test_an_interrupted_intake_leaves_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    imgs = make_images(30, 16, 16)
    root = tmp_path / "in"
    for i, img in enumerate(imgs):
        (root / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ab"[i % 2] / f"{i}.png"), img)
    before = sorted(p.name for p in tmp_path.iterdir())
    read, calls = folders.read_image_file, []

    def dying(path: Path, size: tuple[int, int], *limit: int) -> np.ndarray | None:
        calls.append(path)
        if len(calls) == 20:  # mid-way: some rows are written, nothing may be visible
            assert sorted(p.name for p in tmp_path.iterdir()) == before
            raise KeyboardInterrupt
        return read(path, size, *limit)

    monkeypatch.setattr(folders, "read_image_file", dying)
    assert build_main(["build", str(root), "--out", str(tmp_path / "out"), "--size", "16",
                       "--jobs", "1", "--no-clean", "--policy", "none", "--epochs", "1"]) == 130
    assert len(calls) == 20 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    monkeypatch.setattr(folders, "read_image_file", read)
    assert build_main(["build", str(root), "--out", str(tmp_path / "out"), "--size", "16",
                       "--jobs", "1", "--no-clean", "--policy", "none", "--epochs", "1"]) == 0
    assert not (tmp_path / "out" / ".work").exists()  # input.npy went with it


def test_bad_input_found_after_the_images_leaves_nothing(tmp_path: Path, capsys) -> None:
    path = _npz(tmp_path / "d.npz", False, images=make_images(6), labels=[0, 1, 0, 1, 0, 9])
    assert build_main(["build", str(path), "--out", str(tmp_path / "out"), "--size", "12",
                       "--jobs", "1", "--policy", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "labels" in err
    assert _files(tmp_path) == ["d.npz"]
    with pytest.raises(InputError, match="disk"):
        ImageFile(10**9, (100, 100), tmp_path, "x")  # ~28 TiB: refused before anything


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_pages_read_through_the_map_are_given_back(tmp_path: Path) -> None:
    def rss_file() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
        return 0

    f = ImageFile(4096, (64, 64), tmp_path, "x")  # 48 MiB
    data = np.random.default_rng(0).integers(0, 256, (4096, 64, 64, 3), np.uint8)
    f[0:4096] = data
    a = f.array()
    base = rss_file()
    assert int(np.asarray(a).sum()) == int(data.sum())  # through the map: every page resident
    assert rss_file() - base > 32 << 20
    drop_pages(a)
    assert rss_file() - base < 2 << 20
    total = 0
    for _, rows in iter_rows(a, 1 << 20):
        total += int(rows.sum())
        # One chunk resident at a time, and what a fault maps around it (a large folio)
        assert rss_file() - base < 8 << 20
    assert total == int(data.sum())
    rows = np.array([4000, 3, 500, 3])
    np.testing.assert_array_equal(read_rows(a, rows, 1 << 14), data[rows])
    assert rss_file() - base < 2 << 20
    f.save_as(tmp_path / "input.npy")  # as the build's workers open it: read by pread
    named = np.load(tmp_path / "input.npy", mmap_mode="r")
    rows = np.random.default_rng(1).permutation(4096)[:2000]
    np.testing.assert_array_equal(read_rows(named, rows), data[rows])
    assert rss_file() - base < 1 << 20
