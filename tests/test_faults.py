"""Bad input through every command: exit code 2, one line naming the file (or flag) and the
problem, and nothing new on disk. Each case runs ``frozenaug-build``/``frozenaug-train`` in
process; test_intake.py checks the same intake errors one level down, without the CLI.

The table of cases and what happens is docs/FAULTS.md.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from build_factory import make_build

from frozenaug import format as fmt
from frozenaug.builder.cli import main as build_main
from frozenaug.builder.write import shards
from frozenaug.common import disk
from frozenaug.common.errors import InputError
from frozenaug.trainer.cli import main as train_main

N, SIZE = 12, 16


def _images(n: int = N) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _labels(n: int = N) -> np.ndarray:
    return np.arange(n) % 3


def _npz(d: Path, name: str, **arrays: np.ndarray) -> Path:
    p = d / name
    np.savez(p, **arrays)
    return p


def _folders(d: Path, per_class: int = 3) -> Path:
    """A folder per class (a, b, c) of distinct small PNGs."""
    root = d / "folders"
    im = _images(3 * per_class)
    for c, name in enumerate("abc"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i}.png"), im[c * per_class + i])
    return root


# Each case: (tmp_path, a finished build in tmp_path) -> (tool, argv, words the line must hold).
# The words always include the offending file, folder or flag.
Case = Callable[[Path, Path], tuple[str, list, list[str]]]
FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "1", "--epochs-fine", "0"]


def _build(inp: Path | str, out: Path, *flags: str) -> tuple[str, list, list[str]]:
    # --policy none: the heavy preset does not apply to 16x16 images (refused up front)
    return "build", ["build", inp, "--out", out, "--size", str(SIZE), "--jobs", "1",
                     "--policy", "none", *flags], []


def _with(words: list[str], case: tuple[str, list, list[str]]) -> tuple[str, list, list[str]]:
    return case[0], case[1], [*case[2], *words]


def c_npz_garbage(d, b):
    p = d / "garbage.npz"
    p.write_bytes(b"this is not a zip archive")
    return _with([str(p), "unreadable npz"], _build(p, d / "out"))


def c_npz_truncated(d, b):
    p = _npz(d, "whole.npz", images=_images(), labels=_labels())
    cut = d / "truncated.npz"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    p.unlink()
    return _with([str(cut), "unreadable"], _build(cut, d / "out"))


def c_npz_zero_bytes(d, b):
    p = d / "empty.npz"
    p.touch()
    return _with([str(p), "unreadable npz"], _build(p, d / "out"))


def c_npz_missing_key(d, b):
    p = _npz(d, "x.npz", images=_images())
    return "clean", ["clean", p, "--out", d / "out"], [str(p), "missing key 'labels'"]


def c_npz_wrong_keys(d, b):
    p = _npz(d, "x.npz", pixels=_images(), targets=_labels())
    return _with([str(p), "neither 'images'"], _build(p, d / "out"))


def c_npz_wrong_dtype(d, b):
    p = _npz(d, "x.npz", images=_images().astype(np.int32), labels=_labels())
    return "scan", ["scan", p, "--out", d / "out"], [str(p), "dtype int32"]


def c_npz_wrong_rank(d, b):
    p = _npz(d, "x.npz", images=_images().reshape(N, -1), labels=_labels())
    return _with([str(p), "images: shape (12, 768)"], _build(p, d / "out"))


def c_npz_object_array(d, b):
    p = _npz(d, "x.npz", images=np.array([_images(1)[0], "x"], dtype=object),
             labels=np.arange(2))
    return _with([str(p), "key 'images' unreadable"], _build(p, d / "out"))


def c_labels_length(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels(N - 1))
    return _with([str(p), "11 labels for 12 images"], _build(p, d / "out"))


def c_labels_rank(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=np.zeros((N, 3, 2)))
    return _with([str(p), "labels: shape (12, 3, 2)"], _build(p, d / "out"))


def c_labels_out_of_range(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with([str(p), "label 2 out of range 0..1"], _build(p, d / "out", "--classes", "a,b"))


def c_labels_negative(d, b):
    labels = _labels()
    labels[4] = -1
    p = _npz(d, "x.npz", images=_images(), labels=labels)
    return _with([str(p), "labels[4]: label -1 is negative"], _build(p, d / "out"))


def c_labels_non_integer(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels() + 0.5)
    return _with([str(p), "non-integer label"], _build(p, d / "out"))


def c_pixels_nan(d, b):
    im = _images().astype(np.float32)
    im[5, 3, 3, 1] = np.nan
    p = _npz(d, "x.npz", images=im, labels=_labels())
    return _with([str(p), "images[5]: NaN or inf"], _build(p, d / "out"))


def c_pixels_inf(d, b):
    im = _images().astype(np.float32) / 255
    im[7, 0, 0, 0] = np.inf
    p = _npz(d, "x.npz", images=im, labels=_labels())
    return "scan", ["scan", p, "--out", d / "out"], [str(p), "images[7]: NaN or inf"]


def c_empty_class(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with([str(p), "class 3 ('d') has no images"],
                 _build(p, d / "out", "--classes", "a,b,c,d"))


def c_folder_empty_class(d, b):
    root = _folders(d)
    for f in (root / "b").iterdir():
        f.unlink()
    (root / "b" / "notes.txt").write_text("not an image")
    return _with([str(root / "b"), "class 'b' has no images"], _build(root, d / "out"))


def c_folder_zero_byte(d, b):
    root = _folders(d)
    (root / "a" / "zero.png").touch()
    return _with([str(root / "a" / "zero.png"), "unreadable image"],
                 _build(root, d / "out", "--strict"))


def c_folder_non_image(d, b):
    root = _folders(d)
    (root / "c" / "readme.jpg").write_text("a text file with an image suffix")
    return "scan", ["scan", root, "--out", d / "out", "--strict"], [
        str(root / "c" / "readme.jpg"), "unreadable image"]


def c_folder_only_unreadable(d, b):
    root = _folders(d)
    for f in (root / "a").iterdir():
        f.write_bytes(b"")
    return _with([str(root / "a"), "no readable images"], _build(root, d / "out"))


def c_folder_symlink_loop(d, b):
    root = _folders(d)
    for f in (root / "c").iterdir():
        f.unlink()
    (root / "c" / "loop.png").symlink_to("loop.png")  # resolving it never ends (ELOOP)
    return _with([str(root / "c"), "class 'c' has no readable images"], _build(root, d / "out"))


def c_input_missing(d, b):
    return _with([str(d / "nope.npz"), "no such file or folder"], _build(d / "nope.npz", d / "o"))


def c_flag_size(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with(["--size", "'0x5'"], _build(p, d / "out", "--size", "0x5"))


def c_flag_epochs(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with(["--epochs", "got 0"], _build(p, d / "out", "--epochs", "0"))


def c_flag_shard_size(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with(["--shard-size", "got -4"], _build(p, d / "out", "--shard-size", "-4"))


def c_flag_split(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with(["--split", "sum to 1.5"], _build(p, d / "out", "--split", "0.5,0.5,0.5"))


def c_flag_threshold(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return "scan", ["scan", p, "--out", d / "out", "--threshold", "99"], ["--threshold", "63"]


def c_config_unknown_key(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    cfg = d / "build.yaml"
    cfg.write_text("epochs: 2\nshard_sise: 8\n")
    return _with([str(cfg), "unknown key 'shard_sise'"], _build(p, d / "out", "--config", cfg))


def c_policy_syntax(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    pol = d / "policy.yaml"
    pol.write_text("name: mine\ntransform: {__class_fullname__: Compose, transforms: [\n")
    return _with([str(pol), "unreadable policy"], _build(p, d / "out", "--policy", pol))


def c_policy_unknown_transform(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    pol = d / "policy.yaml"
    pol.write_text("name: mine\ntransform: {__class_fullname__: NoSuchTransform}\n")
    return _with([str(pol), "unknown transform"], _build(p, d / "out", "--policy", pol))


def c_policy_unknown_preset(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    return _with(["superheavy", "presets are"], _build(p, d / "out", "--policy", "superheavy"))


def c_out_is_a_file(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    (d / "taken").write_text("a file where the build should go")
    return _with([str(d / "taken"), "not a folder"], _build(p, d / "taken"))


def c_out_under_a_file(d, b):
    p = _npz(d, "x.npz", images=_images(), labels=_labels())
    (d / "taken").write_text("a file")
    return "clean", ["clean", p, "--out", d / "taken" / "out"], [str(d / "taken"), "not a folder"]


def c_verify_old_schema(d, b):
    raw = json.loads((b / fmt.MANIFEST_NAME).read_text())
    raw["schema_version"] = 0
    (b / fmt.MANIFEST_NAME).write_text(json.dumps(raw))
    return "verify", ["verify", b], [str(b / fmt.MANIFEST_NAME), "schema version 0"]


def c_inspect_manifest_not_json(d, b):
    (b / fmt.MANIFEST_NAME).write_text('{"format": "frozenaug-hdf5", ')
    return "inspect", ["inspect", b], [str(b / fmt.MANIFEST_NAME), "unreadable manifest"]


def c_verify_manifest_malformed(d, b):
    raw = json.loads((b / fmt.MANIFEST_NAME).read_text())
    del raw["shards"][0]["sha256"]
    (b / fmt.MANIFEST_NAME).write_text(json.dumps(raw))
    return "verify", ["verify", b], [str(b / fmt.MANIFEST_NAME), "malformed manifest"]


def c_preview_no_build(d, b):
    return "preview", ["preview", d / "nobuild", "--out", d / "p.png"], [
        str(d / "nobuild"), "not a build directory"]


def c_fit_old_schema(d, b):
    raw = json.loads((b / fmt.MANIFEST_NAME).read_text())
    raw["schema_version"] = 0
    (b / fmt.MANIFEST_NAME).write_text(json.dumps(raw))
    return "fit", ["fit", b, "--out", d / "run", *FIT], [str(b / fmt.MANIFEST_NAME),
                                                        "schema version 0"]


def c_fit_unknown_model(d, b):
    return "fit", ["fit", b, "--out", d / "run", *FIT, "--model", "resnet9000"], [
        "--model", "'resnet9000'", "unknown model"]


def c_fit_bad_lr(d, b):
    return "fit", ["fit", b, "--out", d / "run", *FIT, "--lr", "-0.1"], ["lr=-0.1", "positive"]


def c_fit_bad_batch_size(d, b):
    return "fit", ["fit", b, "--out", d / "run", *FIT, "--batch-size", "0"], ["batch_size=0"]


def c_fit_config_syntax(d, b):
    cfg = d / "fit.yaml"
    cfg.write_text("model: [simple_cnn\n")
    return "fit", ["fit", b, "--out", d / "run", "--config", cfg], [str(cfg), "unreadable config"]


def c_evaluate_run_without_model(d, b):
    run = d / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"build_dir": str(b), "model": "simple_cnn"}))
    return "evaluate", ["evaluate", run, "--out", d / "eval"], [
        str(run / "model.keras"), "missing"]


def c_predict_run_without_model(d, b):
    run = d / "run"
    run.mkdir()
    return "predict", ["predict", run, b, "--out", d / "p.csv"], [
        str(run / "model.keras"), "missing"]


def c_evaluate_bad_severities(d, b):
    return "evaluate", ["evaluate", d / "run", "--out", d / "eval", "--distort",
                        "--severities", "9"], ["--severities", "got 9"]


CASES = {name[2:]: f for name, f in sorted(globals().items()) if name.startswith("c_")}


@pytest.fixture(scope="module")
def pristine_build(tmp_path_factory) -> Path:
    return make_build(tmp_path_factory.mktemp("faults") / "build", n_per_class=4, size=32)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and mtime: any new, changed or removed file shows."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def test_enough_distinct_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_written(case, tmp_path, pristine_build, capsys):
    build = tmp_path / "build"
    shutil.copytree(pristine_build, build)
    command, argv, words = CASES[case](tmp_path, build)
    before = _tree(tmp_path)
    main = train_main if command in ("fit", "evaluate", "predict") else build_main
    prog = "frozenaug-train" if main is train_main else "frozenaug-build"
    capsys.readouterr()

    code = main([str(a) for a in argv])

    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    # One error line, last; before it at most warnings about skipped files that led to it.
    err = lines[-1]
    assert err.startswith(f"{prog}: error: "), lines
    assert all(line.startswith("warning: ") for line in lines[:-1]), lines
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert _tree(tmp_path) == before, "the command left something behind"


def test_non_numeric_flag_is_refused_by_argparse(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        build_main(["build", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o"),
                    "--epochs", "three"])
    assert e.value.code == 2
    assert "argument --epochs: invalid int value: 'three'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("command", ["build", "scan"])
def test_unwritable_output_folder(command, tmp_path, capsys):
    p = _npz(tmp_path, "x.npz", images=_images(), labels=_labels())
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = [command, str(p), "--out", str(locked / "out"), "--size", str(SIZE)]
        assert build_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(locked) in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_symlink_loop_beside_images_is_reported(tmp_path, capsys):
    root = _folders(tmp_path)
    (root / "a" / "loop.png").symlink_to("loop.png")
    code = build_main(["scan", str(root), "--out", str(tmp_path / "out"), "--strict",
                       "--size", str(SIZE)])
    assert code == 2 and "loop.png" in capsys.readouterr().err


# --- disk full ------------------------------------------------------------------------------


def _shard(n: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.zeros(n, np.int32), \
        np.arange(n)


def _write_val_shard(folder: Path) -> Path:
    path = folder / "val" / "shard-00000.h5"
    shards.write_shard(path, *_shard(), class_names=["a"], split="val", shard_index=0)
    return path


def test_no_space_for_a_shard_is_refused_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "free_bytes", lambda folder: 50_000)
    with pytest.raises(InputError) as e:
        _write_val_shard(tmp_path)
    msg = str(e.value)
    path = tmp_path / "val" / "shard-00000.h5"
    assert msg.startswith(f"{path}: not enough disk space: needs about 365.2 KiB, only 48.8 KiB")
    assert list((tmp_path / "val").iterdir()) == []


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    # what HDF5 raises when its cache fails to flush onto a full disk (seen on a 1 MiB tmpfs)
    RuntimeError("Disable slist on flush dest failure failed (file write failed: time = x, "
                 "filename = 'y', file descriptor = 3, errno = 28, error message = 'No space "
                 "left on device', buf = 0x1, total write size = 4096)"),
])
def test_disk_full_while_writing_a_shard(tmp_path, monkeypatch, error):
    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    with pytest.raises(InputError, match="disk full while writing this shard") as e:
        _write_val_shard(tmp_path)
    assert str(e.value).startswith(str(tmp_path / "val" / "shard-00000.h5"))
    assert "needs about 365.2 KiB" in str(e.value) and "free now" in str(e.value)
    assert list((tmp_path / "val").iterdir()) == []  # the temporary is gone too


def test_other_write_errors_are_not_called_disk_full(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError, match="Input/output error"):
        _write_val_shard(tmp_path)
    assert list((tmp_path / "val").iterdir()) == []


def test_build_checks_free_space_up_front(tmp_path, monkeypatch, capsys):
    p = _npz(tmp_path, "x.npz", images=_images(), labels=_labels())
    monkeypatch.setattr(disk, "free_bytes", lambda folder: 10_000)
    before = _tree(tmp_path)
    assert build_main(["build", str(p), "--out", str(tmp_path / "out"), "--size", str(SIZE),
                       "--jobs", "1", "--no-clean", "--policy", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "out") in err
    assert "not enough disk space" in err and "only 10,000 bytes free" in err
    assert _tree(tmp_path) == before


def _can_mount_tmpfs(mnt: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k none {mnt}"],
                           capture_output=True)
    return probe.returncode == 0


def test_build_into_a_nearly_full_filesystem(tmp_path):
    """A real 256 KiB tmpfs, mounted in a private mount namespace that ends with the command:
    nothing is left mounted whatever happens."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs unshare -m and CAP_SYS_ADMIN)")
    rng = np.random.default_rng(0)
    inp = _npz(tmp_path, "x.npz", images=rng.integers(0, 256, (60, 32, 32, 3), np.uint8),
               labels=np.arange(60) % 3)
    root = Path(__file__).resolve().parents[1]
    script = (f"mount -t tmpfs -o size=256k none {mnt} && "
              f"{sys.executable} -m frozenaug.builder build {inp} --out {mnt}/out --size 32 "
              "--epochs 3 "
              f"--jobs 1 --no-clean --shard-size 16; rc=$?; echo LEFT; find {mnt} -mindepth 1; "
              "exit $rc")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=env, cwd=root, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("frozenaug-build: error: ") and "\n" not in err, err
    assert "not enough disk space" in err and "KiB free" in err
    assert proc.stdout.split("LEFT", 1)[1].strip() == ""  # no shard, temporary or folder
    assert list(mnt.iterdir()) == []  # outside the namespace: never mounted here


# --- corruption: verify and the reader both say which shard ---------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _corrupt(build: Path, how: str) -> Path:
    """Damage the build one way; return the shard the error must name."""
    m = fmt.load_manifest(build)
    first, second = m.shards_of("train", 1)[:2]
    path = m.path_of(first)
    raw = json.loads((build / fmt.MANIFEST_NAME).read_text())
    entry = next(s for s in raw["shards"] if s["path"] == first.path)
    if how == "flip_image_byte":
        with h5py.File(path, "r") as f:
            offset = f[fmt.DS_IMAGES].id.get_chunk_info(0).byte_offset + 1000
        _flip(path, offset)
    elif how == "flip_header_byte":
        _flip(path, 2)  # the HDF5 signature
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    elif how == "missing":
        path.unlink()
    elif how == "swapped":
        other = m.path_of(second)
        a, b = path.read_bytes(), other.read_bytes()
        path.write_bytes(b)
        other.write_bytes(a)
    elif how == "manifest_samples":  # one sample moved between two shards' entries
        entry["samples"] -= 1
        next(s for s in raw["shards"] if s["path"] == second.path)["samples"] += 1
    elif how == "manifest_class_counts":
        entry["class_counts"][0] += 1
        entry["class_counts"][1] -= 1
    (build / fmt.MANIFEST_NAME).write_text(json.dumps(raw))
    return path


CORRUPTIONS = ["flip_image_byte", "flip_header_byte", "truncated", "missing", "swapped",
               "manifest_samples", "manifest_class_counts"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corruption_detected_by_verify_and_reader(how, tmp_path, capsys):
    from frozenaug.trainer.read.stream import ShardStream

    build = make_build(tmp_path / "build", n_per_class=40, size=16, shard_size=64)
    bad = _corrupt(build, how)
    assert build_main(["verify", str(build)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{bad}: ") for line in lines), lines
    # The reader checks structure and counts when it starts; bytes (sha256) with verify=True.
    with pytest.raises(InputError, match=f"^{bad}: "):
        ShardStream(build, "train", verify=how == "flip_image_byte")


def test_backbone_refuses_images_it_cannot_take():
    from frozenaug.trainer.train.models import build_model

    with pytest.raises(InputError, match="--model convnext_tiny: images of 16x16 are too small"):
        build_model("convnext_tiny", (16, 16, 3), 3, weights="none")


# --- the rules behind the subprocess suite (tests/test_cli_faults.py), checked directly -----


def test_overwrite_removes_only_own_files_never_an_input(tmp_path):
    from frozenaug.common.owned import removable
    from frozenaug.trainer.layout import FIT_OWN, fit_inputs

    run = tmp_path / "run"
    (run / "checkpoints" / "b").mkdir(parents=True)
    (run / "checkpoints" / "b" / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="holds the input"):  # a build inside the run folder
        removable(run, ["checkpoints"], FIT_OWN, [run / "checkpoints" / "b"])
    (run / "model.keras").write_bytes(b"x")
    with pytest.raises(InputError, match="is the input"):  # --weights RUN/model.keras
        removable(run, ["model.keras"], FIT_OWN,
                  fit_inputs(str(tmp_path / "build"), str(run / "model.keras")))
    (run / "checkpoints" / "b").rename(tmp_path / "moved")
    (run / "checkpoints" / "epoch-000.keras").write_bytes(b"x")
    assert removable(run, ["checkpoints", "model.keras", "tb"], FIT_OWN, []) == [
        run / "checkpoints", run / "model.keras"]
    (run / "checkpoints" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not written by this tool"):
        removable(run, ["checkpoints"], FIT_OWN, [])
    assert (run / "checkpoints" / "notes.txt").is_file()  # a refusal removes nothing


@pytest.mark.parametrize("images, words", [
    (np.zeros((4, 0, 0, 3), np.uint8), "shape"),
    (np.zeros((4, 16, 16, 2), np.uint8), "shape"),
    (np.full((4, 16, 16, 3), 300.0, np.float32), "float values in [300, 300]"),
    (np.zeros((4, 16, 16, 3), np.int32), "dtype int32"),
])
def test_unlabelled_images_follow_the_intake_rules(tmp_path, images, words):
    from frozenaug.data.intake import load_unlabelled

    np.savez(tmp_path / "u.npz", images=images)
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_unlabelled(tmp_path / "u.npz", (16, 16))


def test_unlabelled_float_images_scaled_as_the_build_scales_them(tmp_path):
    from frozenaug.data.intake import load_unlabelled

    np.savez(tmp_path / "u.npz", images=np.full((2, 8, 8, 1), 0.5, np.float32))
    images, ids = load_unlabelled(tmp_path / "u.npz", (16, 16))
    assert images.shape == (2, 16, 16, 3) and ids == ["0", "1"] and (images == 128).all()
