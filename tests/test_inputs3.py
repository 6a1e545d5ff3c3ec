"""Round 3, the input side, in process: the safe reader and parser, image headers, npz members,
manifest paths, library versions on resume, OpenCV variables, policy knobs (the console-script
cases are tests/cases_cli_inputs3.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from frozenaug.common.errors import InputError, brief
from frozenaug.common.imageheaders import image_header
from frozenaug.common.libversions import library_versions, pixel_differences
from frozenaug.common.safeio import read_bytes, read_text
from frozenaug.common.safeparse import ParseLimitError, json_depth, parse_json, parse_yaml
from frozenaug.data.decode import read_image_file
from frozenaug.data.members import duplicates
from frozenaug.format.paths import path_problem
from frozenaug.process.environ import check_environment

LAUGHS = "a0: &a0 [x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10))


# --- safeio ---------------------------------------------------------------------------------


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p.yaml")
    done: list = []

    def read() -> None:
        try:
            read_text(tmp_path / "p.yaml", 1 << 20, "config file")
        except InputError as e:
            done.append(str(e))

    th = threading.Thread(target=read, daemon=True)
    th.start()
    th.join(5)
    assert done and "FIFO" in done[0] and "p.yaml" in done[0]


def test_devices_and_oversized_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="character device"):
        read_bytes("/dev/zero", 1 << 20)
    os.symlink("/dev/zero", tmp_path / "z.png")
    with pytest.raises(InputError, match="z.png: a character device"):
        read_bytes(tmp_path / "z.png", 1 << 20)
    (tmp_path / "big").write_bytes(bytes(1001))
    with pytest.raises(InputError, match="larger than the limit"):
        read_bytes(tmp_path / "big", 1000)
    assert read_bytes(tmp_path / "big", 1001) == bytes(1001)


def test_proc_files_claiming_size_0_are_still_bounded() -> None:
    assert len(read_bytes("/proc/self/status", 1 << 20)) > 0
    with pytest.raises(InputError, match="larger than the limit"):
        read_bytes("/proc/self/maps", 10)


# --- safeparse ------------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_fast() -> None:
    t0 = time.perf_counter()
    with pytest.raises(ParseLimitError, match="expands"):
        parse_yaml(LAUGHS)
    assert time.perf_counter() - t0 < 2


def test_yaml_small_aliases_and_documents_load_as_safe_load() -> None:
    text = "base: &b {lr: 0.1, n: [1, 2]}\nrun: *b\nother: {<<: *b, lr: 0.2}\n"
    assert parse_yaml(text) == yaml.safe_load(text)
    assert parse_yaml("") is None


@pytest.mark.parametrize("text", ["&a [*a]", "&m {k: *m}"])
def test_yaml_cycles_are_refused(text: str) -> None:
    with pytest.raises(ParseLimitError, match="cycle"):
        parse_yaml(text)


@pytest.mark.parametrize("depth", [101, 50_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(ParseLimitError, match="nested"):
        parse_json("[" * depth + "]" * depth)
    with pytest.raises(ParseLimitError, match="nested"):
        parse_yaml("[" * depth + "]" * depth)
    assert parse_json("[" * 100 + "]" * 100) is not None


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth('{"a": "[[[[{{{", "b": [1, {"c": "\\"]]"}]}') == 3
    assert parse_json('{"x": "' + "[" * 500 + '"}') == {"x": "[" * 500}


def test_brief_bounds_the_work_and_the_length() -> None:
    a: list = ["x" * 1000]
    for _ in range(30):  # 2**30 leaves if expanded
        a = [a, a]
    t0 = time.perf_counter()
    s = brief(a)
    assert len(s) <= 80 and time.perf_counter() - t0 < 0.5
    assert brief(3) == "3" and brief("ab") == "'ab'"


def test_an_error_message_stays_short() -> None:
    assert len(str(InputError("f: " + "v" * 100_000))) <= 2000


# --- image headers and the pixel limit ----------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp", ".gif", ".ppm"])
def test_headers_state_the_encoded_size(ext: str) -> None:
    ok, buf = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
    assert ok
    head = image_header(buf.tobytes())
    assert head is not None and (head.width, head.height) == (53, 37)


def test_unknown_content_has_no_header_and_is_not_decoded(tmp_path: Path) -> None:
    assert image_header(b"hello world, not an image") is None
    ok, buf = cv2.imencode(".ras", np.zeros((8, 8, 3), np.uint8))  # Sun raster: cv2 reads it
    assert ok and cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) is not None
    assert image_header(buf.tobytes()) is None
    (tmp_path / "x.png").write_bytes(buf.tobytes())
    assert read_image_file(tmp_path / "x.png", (8, 8)) is None  # cv2 could; we do not


def test_a_bomb_is_refused_before_decoding_and_the_limit_can_be_raised(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 50, 3), 7, np.uint8))
    with pytest.raises(InputError, match=r"a.png: a PNG of 50x40 = 2,000 pixels.*--max-image"):
        read_image_file(tmp_path / "a.png", (16, 16), max_pixels=1999)
    img = read_image_file(tmp_path / "a.png", (16, 16), max_pixels=2000)
    assert img is not None and img.shape == (16, 16, 3) and (img == 7).all()


def test_16_bit_images_convert_as_before(tmp_path: Path) -> None:
    v = np.random.default_rng(0).integers(0, 65536, (16, 16, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), v)
    img = read_image_file(tmp_path / "a.png", (16, 16))
    expect = (v.astype(np.float32) / 257.0).round().astype(np.uint8)[..., ::-1]
    np.testing.assert_array_equal(img, expect)


def test_duplicates_of_100k_names_are_found_fast() -> None:
    names = [f"c{i}" for i in range(100_000)] + ["c7", "c9"]
    t0 = time.perf_counter()
    assert duplicates(names) == ["c7", "c9"]
    assert time.perf_counter() - t0 < 1


# --- manifest paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["../outside/x.h5", "/etc/passwd", "train/../../x.h5",
                                 "train/./shard.h5", "train//shard.h5", "val/shard.h5",
                                 "train/shard.txt", "", "train\\shard.h5"])
def test_shard_paths_must_stay_inside(tmp_path: Path, rel: str) -> None:
    assert path_problem(tmp_path, rel, "train") is not None


def test_a_symlink_out_of_the_build_is_refused_one_inside_is_not(tmp_path: Path) -> None:
    (tmp_path / "b" / "train").mkdir(parents=True)
    (tmp_path / "x.h5").write_bytes(b"")
    os.symlink(tmp_path / "x.h5", tmp_path / "b" / "train" / "out.h5")
    (tmp_path / "b" / "train" / "real.h5").write_bytes(b"")
    os.symlink("real.h5", tmp_path / "b" / "train" / "in.h5")
    assert "outside" in path_problem(tmp_path / "b", "train/out.h5", "train")
    assert path_problem(tmp_path / "b", "train/in.h5", "train") is None
    assert path_problem(tmp_path / "b", "train/epoch-000/shard-00000.h5", "train") is None


# --- library versions ---------------------------------------------------------------------------


def test_pixel_library_differences() -> None:
    now = library_versions()
    assert {"python", "numpy", "opencv", "albumentations", "h5py", "simplejpeg"} <= set(now)
    assert pixel_differences(None, now) == []  # a build from before: resumes
    assert pixel_differences({**now, "h5py": "0.1", "python": "2.7"}, now) == []
    assert pixel_differences({**now, "opencv": "4.9.0"}, now) == [
        f"opencv 4.9.0 -> {now['opencv']}"]


def test_resume_keeps_working_for_builds_without_versions_and_refuses_others(tmp_path) -> None:
    from frozenaug.builder.write.builddir import FRESH, RESUME, BuildDir
    from frozenaug.common.atomic import write_json

    key = {"config": {"seed": 0}, "input_fingerprint": "f", "policy_hash": "p",
           "frozenaug_version": "1"}
    bdir = BuildDir(tmp_path / "o")
    now = library_versions()
    assert bdir.prepare(key, overwrite=False, versions=now) == FRESH
    assert bdir.prepare(key, overwrite=False, versions=now) == RESUME
    write_json(bdir.work / "plan.json", key)  # a plan written before versions were recorded
    assert bdir.prepare(key, overwrite=False, versions=now) == RESUME
    write_json(bdir.work / "plan.json", {**key, "library_versions": {**now, "numpy": "1.0"}})
    with pytest.raises(InputError, match=r"numpy 1.0 -> .*--overwrite"):
        bdir.prepare(key, overwrite=False, versions=now)
    assert bdir.prepare(key, overwrite=True, versions=now) == FRESH


# --- environment, knobs -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["x", " 4", "-1", "4K", "1e3"])
def test_bad_opencv_sizes_are_named(value: str) -> None:
    with pytest.raises(InputError, match="OPENCV_FOR_THREADS_NUM"):
        check_environment({"OPENCV_FOR_THREADS_NUM": value})


def test_good_opencv_sizes_pass() -> None:
    check_environment({"OPENCV_FOR_THREADS_NUM": "4", "OPENCV_IO_MAX_IMAGE_PIXELS": "4KB"})
    check_environment({})


@pytest.mark.parametrize("make", [
    lambda ops: ops.RandAugment(n=33), lambda ops: ops.RandAugment(n=True),
    lambda ops: ops.AugMix(width=17), lambda ops: ops.AugMix(depth=17),
    lambda ops: ops.AugMix(alpha=1e-9), lambda ops: ops.AugMix(alpha=float("inf")),
    lambda ops: ops.StainJitter(shift=1e308), lambda ops: ops.RandAugment(ops=["rotate"] * 65),
    lambda ops: ops.RandAugment(p=float("nan")),
])
def test_knobs_have_upper_bounds(make) -> None:
    from frozenaug.builder.augment import ops

    with pytest.raises(ValueError, match="must be"):
        make(ops)


def test_knobs_at_their_bounds_are_accepted() -> None:
    from frozenaug.builder.augment import ops
    from frozenaug.imaging.mixing import MixConfig

    ops.RandAugment(n=32)
    ops.AugMix(width=16, depth=16, alpha=100.0)
    ops.StainJitter(shift=5.0)
    MixConfig(mixup_alpha=100.0, cutmix_alpha=0.01)
    with pytest.raises(ValueError, match="mixup_alpha"):
        MixConfig(mixup_alpha=1e9)
