"""More cases of tests/test_cli_faults.py (see tests/cases_cli.py): paths of the wrong kind,
numbers at their type's limits, damaged files, and a full disk (``FULL_CASES``: the command
writes into ``full/``, a tmpfs of the given size)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cases_cli import (
    BUILD,
    COMMON,
    FIT,
    TRAIN,
    b,
    copy,
    edit_json,
    first_shard,
    imgs,
    npz,
    t,
    truncate,
    write,
)

BIG = 10**12


def mkdir(name: str):
    return lambda d: (d / name).mkdir(parents=True)


def more_cases() -> dict[str, Callable]:
    cases: dict[str, Callable] = {}

    def add(prefix: str, **more: Callable) -> None:
        for name, make in more.items():
            cases[f"{prefix}_{name}"] = make

    # --- a file where a folder is expected, and the reverse -----------------------------------
    add("path",
        build_input_is_text=b(["build", "notes.txt", "--out", "o", *COMMON], ("notes.txt",), (),
                              write("notes.txt", "hello")),
        build_input_flat_folder=b(["build", "folders/a", "--out", "o", *COMMON], ("folders/a",),
                                  ("folders",)),
        build_input_missing=b(["build", "nope.npz", "--out", "o", *COMMON], ("nope.npz",)),
        build_out_is_file=b(["build", "data.npz", "--out", "f.txt", *COMMON], ("f.txt",),
                            prep=write("f.txt", "x")),
        build_out_inside_file=b(["build", "data.npz", "--out", "f.txt/o", *COMMON], ("f.txt",),
                                prep=write("f.txt", "x")),
        build_config_is_folder=b(["build", "data.npz", "--out", "o", "--config", "c"], ("c",),
                                 prep=mkdir("c")),
        build_config_missing=b(["build", "data.npz", "--out", "o", "--config", "c.yaml"],
                               ("c.yaml",)),
        build_policy_is_folder=b(["build", "data.npz", "--out", "o", *COMMON[:4], "--policy",
                                  "p"], ("p",), prep=mkdir("p")),
        scan_out_is_file=b(["scan", "data.npz", "--out", "f.txt"], ("f.txt",),
                           prep=write("f.txt", "x")),
        clean_out_inside_file=b(["clean", "data.npz", "--out", "f.txt/o"], ("f.txt",),
                                prep=write("f.txt", "x")),
        verify_file=b(["verify", "data.npz"], ("data.npz",)),
        verify_missing=b(["verify", "nope"], ("nope",), ()),
        verify_folder_without_build=b(["verify", "folders"], ("folders",), ("folders",)),
        inspect_file=b(["inspect", "data.npz"], ("data.npz",)),
        preview_dir_is_file=b(["preview", "data.npz", "--out", "x.png"], ("data.npz",)),
        preview_out_is_folder=b(["preview", "build", "--out", "pdir"], ("pdir",),
                                ("build", "data.npz"), mkdir("pdir")),
        preview_input_is_text=b(["preview", "build", "--out", "x.png", "--input", "notes.txt"],
                                ("notes.txt",), ("build",), write("notes.txt", "x")),
        fit_dir_is_file=t(["fit", "data.npz", "--out", "r", *FIT], ("data.npz",), ("data.npz",)),
        fit_dir_not_a_build=t(["fit", "folders", "--out", "r", *FIT], ("folders",), ("folders",)),
        fit_out_is_file=t(["fit", "build", "--out", "f.txt", *FIT], ("f.txt",), ("build",),
                          write("f.txt", "x")),
        fit_config_is_folder=t(["fit", "build", "--out", "r", "--config", "c"], ("c",),
                               ("build",), mkdir("c")),
        evaluate_run_is_file=t(["evaluate", "data.npz", "--out", "e"], ("data.npz",),
                               ("data.npz",)),
        evaluate_run_not_a_run=t(["evaluate", "build", "--out", "e"], ("model.keras",),
                                 ("build",)),
        evaluate_out_is_file=t(["evaluate", "run", "--out", "f.txt"], ("f.txt",), ("run",),
                               write("f.txt", "x")),
        predict_run_is_file=t(["predict", "data.npz", "data.npz", "--out", "p.csv"],
                              ("data.npz",), ("data.npz",)),
        predict_out_is_folder=t(["predict", "run", "data.npz", "--out", "pdir"], ("pdir",),
                                ("run", "data.npz"), mkdir("pdir")),
        )

    # --- numbers at their limits: 0, negative, huge, inf, nan ------------------------------------
    build = ["build", "data.npz", "--out", "o", "--policy", "none", "--jobs", "1"]
    for flag, values in {"--epochs": (0, -1, BIG, "inf", "nan"),
                         "--shard-size": (0, -1, BIG, "nan"),
                         "--jobs": (0, -1, 10**6),
                         "--threshold": (-1, 64, BIG, "inf"),
                         "--outlier-min": (1, -1, BIG),
                         "--size": (0, -1, 8193, BIG, "inf", "nan", "0x16", "16x-1"),
                         "--split": ("nan,0.5,0.5", "inf,0,0", "-0.5,1,0.5", "0,0,0", "0.5,0.5",
                                     "1e308,1e308,1e308")}.items():
        for v in values:
            key = f"build{flag.replace('-', '_')}_{v}".replace(",", "_").replace(".", "p")
            cases[f"num_{key}"] = b([*build, flag, v], (flag.lstrip("-").split("-")[0],))
    for flag, v in (("--threshold", 64), ("--threshold", -1), ("--outlier-min", 1),
                    ("--jobs", 0), ("--size", 0), ("--size", "nan")):
        cases[f"num_scan{flag.replace('-', '_')}_{v}"] = b(["scan", "data.npz", "--out", "o",
                                                            flag, v], (flag,))
    cases["num_clean_split_nan"] = b(["clean", "data.npz", "--out", "o", "--split",
                                      "nan,0.5,0.5"], ("--split",))
    for key, text in (("epochs", "epochs: .inf"), ("seed", "seed: -1"), ("size", "size: [0, 5]"),
                      ("split", "split: [.nan, .5, .5]"), ("shard_size", "shard_size: 1.0e12"),
                      ("jobs", "jobs: 0"), ("threshold", "threshold: 64"),
                      ("epochs_str", "epochs: '3'")):
        cases[f"num_build_config_{key}"] = b(["build", "data.npz", "--out", "o", "--config",
                                              "c.yaml"], ("c.yaml",),
                                             prep=write("c.yaml", text + "\n"))
    for v in (0, -1, "nan"):
        cases[f"num_preview_n_{v}"] = b(["preview", "build", "--out", "x.png", "--n", v],
                                        ("--n",), ("build",))
    fit = ["fit", "build", "--out", "r", *FIT]
    for flag, values in {"--epochs-coarse": (-1, BIG), "--epochs-fine": (-1,),
                         "--batch-size": (0, -1, BIG), "--lr": (0, -1, "inf", "nan"),
                         "--fine-lr": ("nan", "inf", -1), "--unfreeze": (-1,),
                         "--patience": (-1,)}.items():
        for v in values:
            word = flag.lstrip("-").replace("-", "_")
            cases[f"num_fit{flag.replace('-', '_')}_{v}"] = t([*fit, flag, v], (word,),
                                                               ("build",))
    for key, text in (("lr", "lr: .nan"), ("dropout", "dropout: 1.5"), ("head_units",
                      "head_units: [0]"), ("batch_size", "batch_size: 1.0e12"),
                      ("lr_factor", "lr_factor: .inf"), ("min_lr", "min_lr: .nan"),
                      ("unfreeze", "unfreeze: -5"), ("head_l2", "head_l2: .inf"),
                      ("unknown", "lerning_rate: 0.1"), ("patience", "patience: -1")):
        cases[f"num_fit_config_{key}"] = t([*fit, "--config", "c.yaml"], ("c.yaml",) if
                                           key == "unknown" else (key.split("_")[0],),
                                           ("build",), write("c.yaml", text + "\n"))
    for flag, values in {"--severities": (0, -1, 6, BIG), "--batch-size": (0, -1, BIG)}.items():
        for v in values:
            cases[f"num_evaluate{flag.replace('-', '_')}_{v}"] = t(
                ["evaluate", "run", "--out", "e", flag, v], (flag,))
    for v in (0, -1, BIG):
        cases[f"num_predict_batch_size_{v}"] = t(["predict", "run", "data.npz", "--out",
                                                  "p.csv", "--batch-size", v], ("--batch-size",),
                                                 ("run", "data.npz"))

    # --- files a command reads, truncated or altered --------------------------------------------
    man = "build/manifest.json"
    add("tamper",
        manifest_truncated_verify=b(["verify", "build"], ("manifest.json",), ("build",),
                                    truncate(man)),
        manifest_truncated_inspect=b(["inspect", "build"], ("manifest.json",), ("build",),
                                     truncate(man)),
        manifest_truncated_preview=b(["preview", "build", "--out", "x.png"], ("manifest.json",),
                                     ("build",), truncate(man)),
        manifest_truncated_fit=t(["fit", "build", "--out", "r", *FIT], ("manifest.json",),
                                 ("build",), truncate(man)),
        manifest_garbage=b(["verify", "build"], ("manifest.json",), ("build",),
                           write(man, "\x00\x01garbage")),
        manifest_schema_99=b(["inspect", "build"], ("manifest.json",), ("build",),
                             edit_json(man, lambda j: j.update(schema_version=99))),
        manifest_shard_without_sha=b(["verify", "build"], ("manifest.json",), ("build",),
                                     edit_json(man, lambda j: j["shards"][0].pop("sha256"))),
        manifest_shards_not_list=t(["fit", "build", "--out", "r", *FIT], ("manifest.json",),
                                   ("build",), edit_json(man, lambda j: j.update(shards=7))),
        shard_truncated_preview=b(["preview", "build", "--out", "x.png"], ("shard-00000.h5",),
                                  ("build", "data.npz"),
                                  truncate(first_shard("train/epoch-000"))),
        shard_garbage_preview=b(["preview", "build", "--out", "x.png"], ("shard-00000.h5",),
                                ("build", "data.npz"),
                                write(first_shard("train/epoch-000"), "garbage")),
        run_json_truncated=t(["evaluate", "run", "--out", "e"], ("run.json",), ("run",),
                             truncate("run/run.json")),
        run_json_truncated_predict=t(["predict", "run", "data.npz", "--out", "p.csv"],
                                     ("run.json",), ("run", "data.npz"),
                                     truncate("run/run.json")),
        run_json_duplicate_names=t(["evaluate", "run", "--out", "e"], ("run.json",), ("run",),
                                   edit_json("run/run.json", lambda j: j.update(
                                       class_names=["a", "a", "c"]))),
        run_json_shape_zero=t(["evaluate", "run", "--out", "e"], ("run.json",), ("run",),
                              edit_json("run/run.json", lambda j: j.update(
                                  image_shape=[0, 0, 3]))),
        run_json_shape_text=t(["predict", "run", "data.npz", "--out", "p.csv"], ("run.json",),
                              ("run", "data.npz"), edit_json("run/run.json", lambda j: j.update(
                                  image_shape="big"))),
        config_json_truncated=t(["evaluate", "run", "--out", "e"], ("config.json",), ("run",),
                                truncate("run/config.json")),
        config_json_unknown_key=t(["predict", "run", "data.npz", "--out", "p.csv"],
                                  ("config.json",), ("run", "data.npz"),
                                  edit_json("run/config.json", lambda j: j.update(x=1))),
        config_json_lr_text=t(["evaluate", "run", "--out", "e"], ("config.json",), ("run",),
                              edit_json("run/config.json", lambda j: j.update(lr="x"))),
        model_truncated=t(["evaluate", "run", "--out", "e"], ("model.keras",), ("run", "build"),
                          truncate("run/model.keras")),
        npz_truncated=b(["build", "data.npz", "--out", "o", *COMMON], ("data.npz",),
                        prep=truncate("data.npz")),
        npz_garbage=b(["scan", "g.npz", "--out", "o"], ("g.npz",), (), write("g.npz", "junk")),
        npz_zero_bytes=b(["clean", "g.npz", "--out", "o"], ("g.npz",), (), write("g.npz", "")),
        policy_truncated=b(["build", "data.npz", "--out", "o", *COMMON[:4], "--policy",
                            "p.yaml"], ("p.yaml",),
                           prep=write("p.yaml", "name: p\ntransform: {__class_fullname__: Co")),
        build_config_truncated=b(["build", "data.npz", "--out", "o", "--config", "c.yaml"],
                                 ("c.yaml",), prep=write("c.yaml", "epochs: [1, 2\n")),
        fit_config_truncated=t(["fit", "build", "--out", "r", *FIT, "--config", "c.yaml"],
                               ("c.yaml",), ("build",), write("c.yaml", "lr: [0.1\n")),
        classes_file_empty=b(["build", "data.npz", "--out", "o", *COMMON, "--classes",
                              "names.txt"], ("names.txt",), prep=write("names.txt", "\n\n")),
        png_truncated_strict=b(["build", "folders", "--out", "o", *COMMON, "--strict"],
                               ("0.png",), ("folders",), truncate("folders/a/0.png")),
        )
    return cases


def full(tool: str, argv: list, words: tuple, size: str, need: tuple, prep=None):
    def make(d: Path, w: Path):
        for name in need:
            copy(w, d, name)
        if prep is not None:
            prep(d)
        return tool, [str(a) for a in argv], list(words), size
    return make


FULL_CASES: dict[str, Callable] = {
    "full_build": full(BUILD, ["build", "data.npz", "--out", "full/o", *COMMON],
                       ("disk space",), "64k", ("data.npz",)),
    "full_scan": full(BUILD, ["scan", "data.npz", "--out", "full/s", "--size", "16"],
                      ("disk full",), "4k", ("data.npz",)),
    "full_clean": full(BUILD, ["clean", "data.npz", "--out", "full/c", "--size", "16"],
                       ("disk full",), "8k", ("data.npz",)),
    "full_fit": full(TRAIN, ["fit", "build", "--out", "full/r", *FIT], ("disk space",), "2m",
                     ("build",)),
    "full_evaluate": full(TRAIN, ["evaluate", "run", "--out", "full/e"], ("disk full",), "8k",
                          ("run", "build")),
    "full_predict": full(TRAIN, ["predict", "run", "u.npz", "--out", "full/p.csv"],
                         ("disk full",), "4k", ("run",),
                         npz("u.npz", images=imgs(400))),
}
