"""The cases of tests/test_cli_faults.py: name -> maker(case folder, world) -> (tool, argv,
words the error line must hold). A maker copies the inputs it needs from the world (see
test_cli_faults.world) into its folder and may damage them there; argv is relative to it."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

BUILD, TRAIN = "frozenaug-build", "frozenaug-train"
COMMON = ["--size", "16", "--epochs", "1", "--policy", "none", "--jobs", "1"]
FIT = ["--model", "simple_cnn", "--weights", "none", "--epochs-coarse", "1", "--epochs-fine",
       "0", "--batch-size", "8"]
Prep = Callable[[Path], None] | None


def copy(w: Path, d: Path, name: str) -> None:
    src, dst = w / name, d / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():  # not the .lock of a command reading the world's build at that moment
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    else:
        shutil.copy(src, dst)


def case(tool: str, argv: list, words: tuple = (), need: tuple = (), prep: Prep = None):
    def make(d: Path, w: Path) -> tuple[str, list, list[str]]:
        for name in need:
            copy(w, d, name)
        if prep is not None:
            prep(d)
        return tool, [str(a) for a in argv], list(words)
    return make


def b(argv: list, words: tuple = (), need: tuple = ("data.npz",), prep: Prep = None):
    return case(BUILD, argv, words, need, prep)


def t(argv: list, words: tuple = (), need: tuple = ("run",), prep: Prep = None):
    return case(TRAIN, argv, words, need, prep)


def forged_npz(d: Path, name: str, **shapes: tuple) -> Path:
    """An npz whose members' headers claim ``shapes`` but hold only 64 bytes each."""
    path = d / name
    with zipfile.ZipFile(path, "w") as z:
        for key, shape in shapes.items():
            with z.open(f"{key}.npy", "w") as f:
                dtype = "|u1" if "images" in key else "<i8"
                np.lib.format.write_array_header_1_0(
                    f, {"descr": dtype, "fortran_order": False, "shape": shape})
                f.write(bytes(64))
    return path


def npz(name: str, **arrays) -> Prep:
    def prep(d: Path) -> None:
        np.savez(d / name, **{k: (v() if callable(v) else v) for k, v in arrays.items()})
    return prep


def imgs(n: int = 12, shape: tuple = (16, 16, 3), dtype=np.uint8, fill=0) -> np.ndarray:
    return np.full((n, *shape), fill, dtype)


def write(name: str, text: str) -> Prep:
    def prep(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return prep


def truncate(name: str) -> Prep:
    def prep(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
    return prep


def edit_json(name: str, change: Callable[[dict], None]) -> Prep:
    def prep(d: Path) -> None:
        obj = json.loads((d / name).read_text())
        change(obj)
        (d / name).write_text(json.dumps(obj))
    return prep


def both(*preps: Prep) -> Prep:
    def prep(d: Path) -> None:
        for p in preps:
            p(d)
    return prep


def clone(src: str, dst: str) -> Prep:
    return lambda d: shutil.copytree(d / src, d / dst)


def leak_one_row(split: dict) -> None:
    """A split.json whose first train and val rows changed places: a build split differently."""
    tr, va = split["splits"]["train"]["indices"], split["splits"]["val"]["indices"]
    tr[0], va[0] = va[0], tr[0]


def user_data(d: Path) -> None:
    """mydata/train and mydata/test: a folder per class (a, b) of PNGs, the issue's layout."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in "ab":
            (d / "mydata" / split / c).mkdir(parents=True)
            for i in range(6):
                cv2.imwrite(str(d / "mydata" / split / c / f"{i}.png"),
                            rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))


def first_shard(split: str) -> str:
    return f"build/{split}/shard-00000.h5"


def policy_text(transform: str, extra: str = "") -> str:
    return ("name: p\nmix: null\ntransform:\n  __class_fullname__: Compose\n  p: 1.0\n"
            f"{extra}  transforms:\n  - {transform}\n")


CASES: dict[str, Callable] = {}


def add(prefix: str, **cases: Callable) -> None:
    for name, make in cases.items():
        CASES[f"{prefix}_{name}"] = make


# --- data loss: --overwrite never removes an input or what the command did not write ---------
add("loss",
    build_out_holds_input=b(["build", "mydata/train", "--out", "mydata", "--overwrite",
                             *COMMON], ("mydata/train", "the input"), (), user_data),
    build_over_foreign_split=b(["build", "mydata/test", "--out", "mydata", "--overwrite",
                                *COMMON], ("not written by this tool",), (), user_data),
    build_out_inside_input=b(["build", "folders", "--out", "folders/a/out", *COMMON],
                             ("inside",), ("folders",)),
    build_out_is_input=b(["build", "data.npz", "--out", "data.npz", *COMMON], ("data.npz",)),
    build_over_foreign_val=b(["build", "data.npz", "--out", "o", "--overwrite", *COMMON],
                             ("o/val/notes.txt",), prep=write("o/val/notes.txt", "mine")),
    build_over_foreign_work=b(["build", "data.npz", "--out", "o", "--overwrite", *COMMON],
                              ("o/.work/x.txt",), prep=write("o/.work/x.txt", "mine")),
    build_over_policy_in_split=b(["build", "data.npz", "--out", "o", "--overwrite", *COMMON[:4],
                                  "--policy", "o/test/p.yaml"], ("o/test",),
                                 prep=write("o/test/p.yaml", policy_text(
                                     "{__class_fullname__: HorizontalFlip, p: 0.5}"))),
    fit_over_foreign_tb=t(["fit", "build", "--out", "r", "--overwrite", *FIT], ("r/tb",),
                          ("build",), write("r/tb/notes.txt", "mine")),
    predict_out_is_input=t(["predict", "run", "data.npz", "--out", "data.npz"], ("data.npz",),
                           ("run", "data.npz")),
    predict_out_is_model=t(["predict", "run", "data.npz", "--out", "run/model.keras"],
                           ("model.keras",), ("run", "data.npz")),
    preview_out_is_manifest=b(["preview", "build", "--out", "build/manifest.json"],
                              ("manifest.json",), ("build",)),
    )


# --- crashes: sizes claimed by headers, huge labels, huge sizes --------------------------------


def _forged(name: str, **shapes: tuple) -> Prep:
    return lambda d: forged_npz(d, name, **shapes)


def _labels_forged(d: Path) -> None:
    path = d / "f.npz"
    with zipfile.ZipFile(path, "w") as z:
        with z.open("images.npy", "w") as f:
            np.save(f, imgs(8))
        with z.open("labels.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<i8", "fortran_order": False, "shape": (10**12,)})
            f.write(bytes(64))


def _big_npz(d: Path) -> None:
    np.savez(d / "big.npz", images=imgs(4000, fill=7), labels=np.arange(4000) % 2)


add("crash",
    header_1e12_images=b(["build", "f.npz", "--out", "o", *COMMON], ("f.npz", "header claims"),
                         (), _forged("f.npz", images=(10**12, 16, 16, 3), labels=(8,))),
    header_1e12_labels=b(["scan", "f.npz", "--out", "o"], ("labels",), (), _labels_forged),
    medmnist_header=b(["build", "m.npz", "--out", "o", *COMMON], ("train_images",), (),
                      _forged("m.npz", train_images=(10**12, 16, 16), train_labels=(8,),
                              val_images=(1, 16, 16), val_labels=(1,), test_images=(1, 16, 16),
                              test_labels=(1,))),
    label_2_62=b(["build", "l.npz", "--out", "o", *COMMON], ("l.npz", "4611686018427387904"),
                 (), npz("l.npz", images=imgs(4), labels=np.array([0, 1, 0, 2**62]))),
    label_2_62_scan=b(["scan", "l.npz", "--out", "o"], ("l.npz",), (),
                      npz("l.npz", images=imgs(4), labels=np.array([0, 1, 0, 2**62]))),
    size_8192_memory=b(["build", "big.npz", "--out", "o", *COMMON[2:], "--size", "8192"],
                       ("big.npz", "memory"), (), _big_npz),
    header_truncated_rows=b(["build", "f.npz", "--out", "o", *COMMON], ("f.npz",), (),
                            _forged("f.npz", images=(40, 16, 16, 3), labels=(8,))),
    )


# --- the hang: one class, then fit ------------------------------------------------------------
add("hang",
    fit_single_class=t(["fit", "onebuild", "--out", "r", *FIT], ("onebuild", "2"),
                       ("onebuild",)),
    build_single_class_folder=b(["build", "folders/a", "--out", "o", *COMMON], (), ("folders",),
                                lambda d: (d / "folders" / "b").rename(d / "folders" / "a" /
                                                                       "b")),
    build_single_class_npz=b(["build", "one.npz", "--out", "o", *COMMON], ("one.npz",),
                             ("one.npz",)),
    )

# --- once tracebacks ---------------------------------------------------------------------------
add("trace",
    policy_crop_too_big=b(["build", "data.npz", "--out", "o", *COMMON[:4], "--policy", "p.yaml"],
                          ("p.yaml", "16x16"), prep=write("p.yaml", policy_text(
                              "{__class_fullname__: RandomCrop, height: 64, width: 64, p: 1.0}"))),
    policy_bbox_params=b(["build", "data.npz", "--out", "o", *COMMON[:4], "--policy", "p.yaml"],
                         ("p.yaml",), prep=write("p.yaml", policy_text(
                             "{__class_fullname__: HorizontalFlip, p: 1.0}",
                             "  bbox_params: {format: pascal_voc, label_fields: [labels]}\n"))),
    build_seed_2_63=b(["build", "data.npz", "--out", "o", *COMMON, "--seed", 2**63], ("--seed",)),
    build_seed_1e30=b(["build", "data.npz", "--out", "o", *COMMON, "--seed", 10**30],
                      ("--seed",)),
    build_seed_negative=b(["build", "data.npz", "--out", "o", *COMMON, "--seed", -1],
                          ("--seed",)),
    clean_seed_negative=b(["clean", "data.npz", "--out", "o", "--seed", -1], ("--seed",)),
    fit_input_norm_pretrained_model=t(
        ["fit", "build", "--out", "r", *FIT[2:], "--model", "efficientnetv2b0", "--input-norm",
         "image"], ("input_norm", "efficientnetv2b0"), ("build",)),
    fit_fine_build_split_differs=t(
        ["fit", "build", "--out", "r", *FIT, "--epochs-fine", "1", "--fine-build", "b2"],
        ("b2", "split"), ("build",), both(clone("build", "b2"),
                                          edit_json("b2/split.json", leak_one_row))),
    fit_fine_build_without_fine_epochs=t(
        ["fit", "build", "--out", "r", *FIT, "--fine-build", "build"],
        ("fine_build", "--epochs-fine"), ("build",)),
    fit_seed_2_32=t(["fit", "build", "--out", "r", *FIT, "--seed", 2**32], ("seed",), ("build",)),
    fit_seed_negative=t(["fit", "build", "--out", "r", *FIT, "--seed", -1], ("seed",),
                        ("build",)),
    fit_config_seed_1e30=t(["fit", "build", "--out", "r", *FIT, "--config", "c.yaml"], ("seed",),
                           ("build",), write("c.yaml", "seed: 1000000000000000000000000000000\n")),
    evaluate_seed_2_32=t(["evaluate", "run", "--out", "e", "--seed", 2**32], ("--seed",)),
    evaluate_seed_negative=t(["evaluate", "run", "--out", "e", "--seed", -1], ("--seed",)),
    predict_two_channels=t(["predict", "run", "u.npz", "--out", "p.csv"], ("u.npz",), ("run",),
                           npz("u.npz", images=imgs(4, (16, 16, 2)))),
    model_classes_differ=t(["evaluate", "run", "--out", "e"], ("model.keras", "4 classes"),
                           ("run", "build"), edit_json("run/run.json", lambda j: j.update(
                               class_names=["a", "b", "c", "d"]))),
    state_damaged=t(["fit", "build", "--out", "run", "--resume", *FIT], ("state.json",),
                    ("run", "build"), both(edit_json("run/state.json", lambda j: j.update(
                        phase="coarse", epoch="x")), lambda d: (d / "run/model.keras").unlink())),
    )

# --- one intake ---------------------------------------------------------------------------------
add("intake",
    predict_float_out_of_range=t(["predict", "run", "u.npz", "--out", "p.csv"], ("u.npz",),
                                 ("run",), npz("u.npz", images=imgs(4, dtype=np.float32,
                                                                     fill=300.0))),
    npz_duplicate_class_names=b(["build", "n.npz", "--out", "o", *COMMON], ("duplicate",), (),
                                npz("n.npz", images=imgs(4), labels=np.arange(4) % 2,
                                    class_names=np.array(["x", "x"]))),
    npz_empty_class_name=b(["build", "n.npz", "--out", "o", *COMMON], ("empty",), (),
                           npz("n.npz", images=imgs(4), labels=np.arange(4) % 2,
                               class_names=np.array(["x", " "]))),
    npz_class_names_2d=b(["scan", "n.npz", "--out", "o"], ("class_names",), (),
                         npz("n.npz", images=imgs(4), labels=np.arange(4) % 2,
                             class_names=np.array([["x"], ["y"]]))),
    classes_flag_duplicate=b(["build", "data.npz", "--out", "o", *COMMON, "--classes",
                              "a,b,a"], ("duplicate",)),
    npz_float_out_of_range=b(["build", "n.npz", "--out", "o", *COMMON], ("n.npz",), (),
                             npz("n.npz", images=imgs(4, dtype=np.float32, fill=300.0),
                                 labels=np.arange(4) % 2)),
    )

# --- encoded shards: a bad --encode fails before anything is written ---------------------------
add("encode",
    build_quality_101=b(["build", "data.npz", "--out", "o", *COMMON, "--encode", "jpeg:101"],
                        ("--encode", "1..100")),
    build_unknown_codec=b(["build", "data.npz", "--out", "o", *COMMON, "--encode", "gif"],
                          ("--encode", "gif")),
    build_png_quality=b(["build", "data.npz", "--out", "o", *COMMON, "--encode", "png:5"],
                        ("--encode", "png:5")),
    build_config_webp_0=b(["build", "data.npz", "--out", "o", *COMMON, "--config", "c.yaml"],
                          ("c.yaml", "encode"), prep=write("c.yaml", "encode: webp:0\n")),
    )

from cases_cli_more import FULL_CASES, more_cases  # noqa: E402  (they use the helpers above)

CASES.update(more_cases())
__all__ = ["CASES", "FULL_CASES", "forged_npz"]
