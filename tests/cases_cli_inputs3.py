"""Round 3 of tests/test_cli_faults.py, the input side (docs/FAULTS.md, "Round 3"): special
files (FIFOs, devices, symlinks to them), decompression bombs (image headers that claim huge
sizes), YAML/JSON bombs (aliases, deep nesting), unbounded policy knobs, quadratic checks,
encrypted npz members, invalid OpenCV environment variables, manifest shard paths that leave
the build, and a resume under other library versions. A maker may return a fourth item: extra
environment variables for the command."""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cases_cli import BUILD, COMMON, FIT, TRAIN, b, both, case, edit_json, imgs, t, write

WORLD_BUILD = ["build", "data.npz", "--out", "build", "--size", "16", "--epochs", "1",
               "--policy", "none", "--jobs", "1", "--no-clean"]  # as test_cli_faults.world
SHARD0 = "build/train/epoch-000/shard-00000.h5"


# --- files that claim huge images -------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A PNG whose IHDR states w x h, with a few rows of data (a decoder allocates first)."""
    rows = zlib.compress((b"\x00" + bytes(w * 3)) * 4)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def tiff_bomb(w: int = 30000, h: int = 30000) -> bytes:
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, w * h)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, n, v) for tag, kind, n, v in entries) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(1024)


def webp_bomb(w: int = 16383, h: int = 16383) -> bytes:
    bits = (w - 1) | ((h - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + bytes(64)
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_bomb(w: int = 65000, h: int = 65000) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + bytes(9)
    return b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + bytes(9) + sof \
        + b"\xff\xda" + bytes(64)


def bmp_bomb(w: int = 30000, h: int = 30000) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 32, 0, w * h * 4, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + w * h * 4, 0, 0, 54) + dib + bytes(256)


def gif_bomb() -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + b"," + struct.pack(
        "<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x4c\x01\x00;"


def put(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def prep(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data() if callable(data) else data)
    return prep


def fifo(name: str) -> Callable[[Path], None]:
    def prep(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(d / name)
    return prep


def link(name: str, target: str) -> Callable[[Path], None]:
    def prep(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, d / name)
    return prep


def sparse(name: str, size: int, head: bytes) -> Callable[[Path], None]:
    def prep(d: Path) -> None:
        with open(d / name, "wb") as f:
            f.write(head)
            f.truncate(size)
    return prep


def flat_folder(d: Path) -> None:
    """flat/: unlabelled PNGs for predict."""
    import cv2

    (d / "flat").mkdir()
    for i in range(3):
        cv2.imwrite(str(d / "flat" / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))


def abc_folders(d: Path) -> None:
    """abc/: a folder per class of the run (a, b, c), for evaluate."""
    import cv2

    for c in "abc":
        (d / "abc" / c).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(d / "abc" / c / f"{i}.png"), np.full((16, 16, 3), 60 * i, np.uint8))


# --- YAML and JSON bombs ------------------------------------------------------------------------

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10))
YAML_BOMB = "l0: &l0 lol\n" + LAUGHS
DEEP = "[" * 50_000 + "]" * 50_000


def policy_with(mix: str = "null", transform: str = "{__class_fullname__: HorizontalFlip, "
                "p: 0.5}", head: str = "") -> str:
    return (f"{head}name: p\nmix: {mix}\ntransform:\n  __class_fullname__: Compose\n  p: 1.0\n"
            f"  transforms:\n  - {transform}\n")


def op(name: str, **knobs: object) -> str:
    args = ", ".join(f"{k}: {json.dumps(v)}" for k, v in knobs.items())
    return f"{{__class_fullname__: builder.ops.{name}, {args}}}"


# --- zip members ---------------------------------------------------------------------------------


def patched_npz(name: str, flag: int = 0, method: int | None = None) -> Callable[[Path], None]:
    """data.npz with every member's general-purpose flags or compression method changed, in the
    local headers and the central directory."""
    def prep(d: Path) -> None:
        np.savez(d / name, images=imgs(4), labels=np.arange(4) % 2)
        data = bytearray((d / name).read_bytes())
        for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            pos = data.find(sig)
            while pos >= 0:
                old = struct.unpack_from("<H", data, pos + flag_at)[0]
                struct.pack_into("<H", data, pos + flag_at, old | flag)
                if method is not None:
                    struct.pack_into("<H", data, pos + flag_at + 2, method)
                pos = data.find(sig, pos + 4)
        (d / name).write_bytes(bytes(data))
    return prep


# --- manifests -------------------------------------------------------------------------------


def shard_path(path: str) -> Callable[[Path], None]:
    return edit_json("build/manifest.json", lambda m: m["shards"][0].update(path=path))


def outside_copy(d: Path) -> None:
    (d / "outside").mkdir()
    (d / "outside" / "x.h5").write_bytes((d / SHARD0).read_bytes())


def symlinked_shard(d: Path) -> None:
    outside_copy(d)
    (d / SHARD0).unlink()
    os.symlink(os.path.relpath(d / "outside" / "x.h5", (d / SHARD0).parent), d / SHARD0)


def other_opencv(d: Path) -> None:
    """A build whose manifest says OpenCV 4.9.0 wrote it, one shard missing: a resume."""
    m = json.loads((d / "build/manifest.json").read_text())
    m["library_versions"]["opencv"] = "4.9.0"
    (d / "build/manifest.json").write_text(json.dumps(m))
    (d / "build" / m["shards"][-1]["path"]).unlink()


def env_case(tool: str, argv: list, words: tuple, env: dict, need: tuple, prep=None):
    inner = case(tool, argv, words, need, prep)
    return lambda d, w: (*inner(d, w), env)


def input_cases() -> dict[str, Callable]:
    cases: dict[str, Callable] = {}

    def add(prefix: str, **more: Callable) -> None:
        for name, make in more.items():
            cases[f"{prefix}_{name}"] = make

    build_folders = ["build", "folders", "--out", "o", *COMMON]
    build_policy = ["build", "data.npz", "--out", "o", *COMMON[:4], "--policy", "p.yaml"]
    # --- special files: never block, never read without end -------------------------------------
    add("special",
        fifo_in_class_folder=b(build_folders, ("pipe.png", "FIFO"), ("folders",),
                               fifo("folders/a/pipe.png")),
        fifo_in_class_folder_strict=b([*build_folders, "--strict"], ("pipe.png", "FIFO"),
                                      ("folders",), fifo("folders/a/pipe.png")),
        fifo_config=b(["build", "data.npz", "--out", "o", "--config", "fifo.yaml"],
                      ("fifo.yaml", "FIFO"), prep=fifo("fifo.yaml")),
        config_dev_zero=b(["build", "data.npz", "--out", "o", "--config", "/dev/zero"],
                          ("/dev/zero", "character device")),
        config_link_to_dev_zero=b(["build", "data.npz", "--out", "o", "--config", "c.yaml"],
                                  ("c.yaml", "character device"),
                                  prep=link("c.yaml", "/dev/zero")),
        png_link_to_dev_zero=b(build_folders, ("z.png", "character device"), ("folders",),
                               link("folders/b/z.png", "/dev/zero")),
        fifo_npz=b(["build", "d.npz", "--out", "o", *COMMON], ("d.npz", "FIFO"), (),
                   fifo("d.npz")),
        npz_link_to_dev_zero=b(["scan", "z.npz", "--out", "o"], ("z.npz", "character device"),
                               (), link("z.npz", "/dev/zero")),
        fifo_policy=b(build_policy, ("p.yaml", "FIFO"), prep=fifo("p.yaml")),
        fifo_classes_file=b(["build", "data.npz", "--out", "o", *COMMON, "--classes", "n.txt"],
                            ("n.txt", "FIFO"), prep=fifo("n.txt")),
        fit_config_fifo=t(["fit", "build", "--out", "r", *FIT, "--config", "c.yaml"],
                          ("c.yaml", "FIFO"), ("build",), fifo("c.yaml")),
        predict_fifo_in_flat_folder=t(["predict", "run", "flat", "--out", "p.csv"],
                                      ("pipe.png", "FIFO"), ("run",),
                                      both(flat_folder, fifo("flat/pipe.png"))),
        )
    # --- decompression bombs: refused from the header, before decoding --------------------------
    bombs = {"png": png_bomb, "tiff": tiff_bomb, "webp": webp_bomb, "jpeg": jpeg_bomb,
             "bmp": bmp_bomb, "gif": gif_bomb}
    for kind, make in bombs.items():
        suffix = {"tiff": "tif", "jpeg": "jpg", "webp": "png", "gif": "png"}.get(kind, kind)
        add("bomb", **{f"{kind}_in_class_folder": b(
            build_folders, (f"bomb.{suffix}", "--max-image-pixels"), ("folders",),
            put(f"folders/b/bomb.{suffix}", make))})
    add("bomb",
        png_scan=b(["scan", "folders", "--out", "s"], ("bomb.png", "30000x30000"), ("folders",),
                   put("folders/a/bomb.png", png_bomb)),
        png_clean=b(["clean", "folders", "--out", "c"], ("bomb.png",), ("folders",),
                    put("folders/a/bomb.png", png_bomb)),
        png_evaluate=t(["evaluate", "run", "abc", "--out", "e"], ("bomb.png",), ("run",),
                       both(abc_folders, put("abc/c/bomb.png", png_bomb))),
        png_predict_flat=t(["predict", "run", "flat", "--out", "p.csv"], ("bomb.png",),
                           ("run",), both(flat_folder, put("flat/bomb.png", png_bomb))),
        sparse_file_over_size_limit=b([*build_folders, "--max-image-pixels", "1000"],
                                      ("big.png", "larger than the limit"), ("folders",),
                                      sparse("folders/a/big.png", 24 << 20, png_bomb(16, 16))),
        npz_images_over_pixel_limit=b(["build", "data.npz", "--out", "o", *COMMON,
                                       "--max-image-pixels", "100"],
                                      ("data.npz", "16x16", "--max-image-pixels")),
        npz_images_over_pixel_limit_predict=t(
            ["predict", "run", "u.npz", "--out", "p.csv", "--max-image-pixels", "100"],
            ("u.npz", "--max-image-pixels"), ("run",),
            lambda d: np.savez(d / "u.npz", images=imgs(4))),
        max_image_pixels_zero=b([*build_folders, "--max-image-pixels", "0"],
                                ("--max-image-pixels",), ("folders",)),
        max_image_pixels_negative_predict=t(
            ["predict", "run", "flat", "--out", "p.csv", "--max-image-pixels", "-1"],
            ("--max-image-pixels",), ("run",), flat_folder),
        )
    # --- YAML/JSON: alias bombs and deep nesting, in every file that is parsed ------------------
    add("yaml",
        alias_bomb_in_policy_mix=b(build_policy, ("p.yaml", "expands"),
                                   prep=write("p.yaml", policy_with("*l9", head=YAML_BOMB))),
        alias_bomb_in_build_config=b(["build", "data.npz", "--out", "o", "--config", "c.yaml"],
                                     ("c.yaml", "expands"),
                                     prep=write("c.yaml", YAML_BOMB.replace("l0:", "x0:"))),
        alias_bomb_in_fit_config=t(["fit", "build", "--out", "r", *FIT, "--config", "c.yaml"],
                                   ("c.yaml", "expands"), ("build",), write("c.yaml", YAML_BOMB)),
        alias_cycle_in_policy=b(build_policy, ("p.yaml", "cycle"),
                                prep=write("p.yaml", policy_with("&m [*m]"))),
        deep_policy_yaml=b(build_policy, ("p.yaml", "nested"), prep=write("p.yaml", DEEP)),
        deep_policy_json=b([*build_policy[:-1], "p.json"], ("p.json", "nested"),
                           prep=write("p.json", DEEP)),
        deep_build_config=b(["build", "data.npz", "--out", "o", "--config", "c.yaml"],
                            ("c.yaml", "nested"), prep=write("c.yaml", "x: " + DEEP)),
        deep_fit_config=t(["fit", "build", "--out", "r", *FIT, "--config", "c.yaml"],
                          ("c.yaml", "nested"), ("build",), write("c.yaml", DEEP)),
        deep_fit_config_json=t(["fit", "build", "--out", "r", *FIT, "--config", "c.json"],
                               ("c.json", "nested"), ("build",), write("c.json", DEEP)),
        deep_manifest_verify=b(["verify", "build"], ("manifest.json", "nested"), ("build",),
                               write("build/manifest.json", DEEP)),
        deep_manifest_fit=t(["fit", "build", "--out", "r", *FIT], ("manifest.json", "nested"),
                            ("build",), write("build/manifest.json", DEEP)),
        deep_run_json_evaluate=t(["evaluate", "run", "--out", "e"], ("run.json", "nested"),
                                 ("run", "build"), write("run/run.json", DEEP)),
        deep_config_json_predict=t(["predict", "run", "data.npz", "--out", "p.csv"],
                                   ("config.json", "nested"), ("run", "data.npz"),
                                   write("run/config.json", DEEP)),
        long_value_is_cut=b(["build", "data.npz", "--out", "o", "--config", "c.yaml"],
                            ("c.yaml", "..."), prep=write("c.yaml", "size: " + "x" * 100_000)),
        )
    # --- policy knobs: bounded, one line naming the file and the key ---------------------------
    knobs = {"randaugment_n_1e9": ("RandAugment", {"n": 10**9}, "n"),
             "augmix_width_1e7": ("AugMix", {"width": 10**7}, "width"),
             "augmix_depth_1e6": ("AugMix", {"depth": 10**6}, "depth"),
             "augmix_alpha_tiny": ("AugMix", {"alpha": 1e-12}, "alpha"),
             "stain_shift_huge": ("StainJitter", {"shift": 1e308}, "shift"),
             "randaugment_n_true": ("RandAugment", {"n": True}, "n")}
    for name, (cls, values, key) in knobs.items():
        add("knob", **{name: b(build_policy, ("p.yaml", cls, key),
                               prep=write("p.yaml", policy_with(transform=op(cls, **values))))})
    add("knob",
        mix_alpha_1e9=b(build_policy, ("p.yaml", "mixup_alpha"), prep=write(
            "p.yaml", policy_with("{mixup_alpha: 1.0e9, cutmix_alpha: 1.0, prob: 0.5, "
                                  "cutmix_share: 0.5}"))),
        )
    # --- quadratic checks: 100k class names answer at once --------------------------------------
    many = "\n".join(f"c{i}" for i in range(100_000))
    add("quad",
        classes_100k_duplicate=b(["build", "data.npz", "--out", "o", *COMMON, "--classes",
                                  "n.txt"], ("n.txt", "duplicate", "c7"),
                                 prep=write("n.txt", many + "\nc7\n")),
        classes_100k_folders=b([*build_folders, "--classes", "n.txt"], ("folders", "no folder"),
                               ("folders",), write("n.txt", many)),
        )
    # --- npz members zipfile cannot read ---------------------------------------------------------
    add("zip",
        npz_encrypted_member=b(["build", "e.npz", "--out", "o", *COMMON], ("e.npz", "encrypted"),
                               (), patched_npz("e.npz", flag=0x1)),
        npz_unknown_compression=b(["scan", "e.npz", "--out", "o"], ("e.npz", "compression"), (),
                                  patched_npz("e.npz", method=99)),
        )
    # --- environment variables OpenCV parses -------------------------------------------------
    add("env",
        opencv_threads_x=env_case(BUILD, ["build", "data.npz", "--out", "o", *COMMON[:4],
                                          "--policy", "light"], ("OPENCV_FOR_THREADS_NUM",),
                                  {"OPENCV_FOR_THREADS_NUM": "x"}, ("data.npz",)),
        opencv_max_pixels_x=env_case(TRAIN, ["predict", "run", "flat", "--out", "p.csv"],
                                     ("OPENCV_IO_MAX_IMAGE_PIXELS",),
                                     {"OPENCV_IO_MAX_IMAGE_PIXELS": "x"}, ("run",),
                                     flat_folder),
        )
    # --- manifest shard paths stay inside the build ------------------------------------------
    add("manifest",
        path_dotdot_fit=t(["fit", "build", "--out", "r", *FIT], ("manifest.json", "../outside"),
                          ("build",), both(outside_copy, shard_path("../outside/x.h5"))),
        path_dotdot_verify=b(["verify", "build"], ("manifest.json", "../outside"), ("build",),
                             both(outside_copy, shard_path("../outside/x.h5"))),
        path_absolute_verify=b(["verify", "build"], ("manifest.json", "/etc/passwd"),
                               ("build",), shard_path("/etc/passwd")),
        path_other_split_inspect=b(["inspect", "build"], ("manifest.json", "train/"),
                                   ("build",), shard_path("val/shard-00000.h5")),
        path_dot_segments_preview=b(["preview", "build", "--out", "x.png"], ("manifest.json",),
                                    ("build", "data.npz"),
                                    shard_path("train/./epoch-000/shard-00000.h5")),
        symlink_out_verify=b(["verify", "build"], ("manifest.json", "outside"), ("build",),
                             symlinked_shard),
        symlink_out_predict=t(["predict", "run", "build", "--out", "p.csv"],
                              ("manifest.json", "outside"), ("run", "build"), symlinked_shard),
        )
    # --- a resume under other library versions ---------------------------------------------------
    add("versions",
        resume_under_other_opencv=b(WORLD_BUILD, ("build", "opencv 4.9.0 ->", "--overwrite"),
                                    ("data.npz", "build"), other_opencv),
        )
    return cases


INPUT_CASES = input_cases()
