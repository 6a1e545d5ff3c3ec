"""Round 3 cases of tests/test_cli_faults.py: runs, processes, outputs (docs/FAULTS.md).

Outputs that are not regular files (a device, a FIFO, a symlink to one), a run evaluated,
predicted or resumed against a build that is not its own (re-split), a checkpoint of another
architecture, names too long, and read-only mounts (``RUNS3_FULL_CASES``: a tmpfs mounted
``ro``). Each case: exit 2, one line naming the path, its folder unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from cases_cli import BUILD, COMMON, FIT, TRAIN, b, both, edit_json, imgs, npz, t
from cases_cli_more import full

LONG = "n" * 300  # over NAME_MAX (255)


def node(name: str, kind: str = "fifo") -> Callable[[Path], None]:
    """A character device like /dev/null (root only; else a FIFO), a FIFO, or a symlink to one."""
    def prep(d: Path) -> None:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "chardev" and os.geteuid() == 0:
            os.mknod(p, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
        elif kind == "link":
            os.mkfifo(d / "fifo")
            p.symlink_to("fifo" if p.parent == d else d / "fifo")
        else:
            os.mkfifo(p)
    return prep


def resplit(d: Path) -> None:
    """The build rebuilt with another seed, as far as its split goes: rows moved between splits."""
    path = d / "build" / "split.json"
    split = json.loads(path.read_text())
    s = split["splits"]
    tr, te = s["train"]["indices"], s["test"]["indices"]
    tr[0], te[0] = te[0], tr[0]
    path.write_text(json.dumps(split))


def here(d: Path) -> None:
    """run.json names this case's build (fit ran here)."""
    edit_json("run/run.json", lambda j: j.update(build_dir=str(d / "build")))(d)


def other_architecture(d: Path) -> None:
    """A run interrupted after epoch 1 whose checkpoint is a net of another head."""
    shutil.copy(d / "run" / "model.keras", d / "run" / "checkpoints" / "epoch-000.keras")
    edit_json("run/state.json", lambda j: j.update(
        phase="coarse", checkpoint="checkpoints/epoch-000.keras"))(d)
    edit_json("run/config.json", lambda j: j.update(epochs_coarse=2, head_units=[32]))(d)
    (d / "run" / "model.keras").unlink()


FIT2 = [*FIT[:FIT.index("--epochs-coarse")], "--epochs-coarse", "2",
        *FIT[FIT.index("--epochs-coarse") + 2:]]
RB = ("run", "build")


def runs3_cases() -> dict[str, Callable]:
    u = npz("u.npz", images=imgs(4))
    return {
        # --- an output that is not a regular file is never replaced --------------------------
        "runs3_predict_out_chardev": t(["predict", "run", "u.npz", "--out", "null"],
                                       ("null", "not a regular file"), ("run",),
                                       both(u, node("null", "chardev"))),
        "runs3_predict_out_fifo": t(["predict", "run", "u.npz", "--out", "p.csv"],
                                    ("p.csv", "FIFO"), ("run",), both(u, node("p.csv"))),
        "runs3_predict_out_link_to_fifo": t(["predict", "run", "u.npz", "--out", "p.csv"],
                                            ("p.csv", "FIFO (through a symlink)"), ("run",),
                                            both(u, node("p.csv", "link"))),
        "runs3_evaluate_out_fifo": t(["evaluate", "run", "build", "--out", "ev"],
                                     ("ev/metrics.json", "FIFO"), RB, node("ev/metrics.json")),
        "runs3_evaluate_png_chardev": t(["evaluate", "run", "build", "--out", "ev"],
                                        ("ev/confusion.png", "not a regular file"), RB,
                                        node("ev/confusion.png", "chardev")),
        "runs3_clean_out_fifo": b(["clean", "data.npz", "--out", "c", "--size", "16"],
                                       ("c/scan.json", "FIFO"), prep=node("c/scan.json")),
        # --- a run is tied to its build's split ----------------------------------------------
        "runs3_evaluate_resplit_build": t(["evaluate", "run", "--out", "ev"],
                                          ("build", "not the build run run trained on"), RB,
                                          both(here, resplit)),
        "runs3_predict_resplit_build": t(["predict", "run", "build", "--out", "p.csv"],
                                         ("build", "not the build run run trained on"), RB,
                                         both(here, resplit)),
        "runs3_resume_resplit_build": t(["fit", "build", "--out", "run", *FIT, "--resume"],
                                        ("build", "former val and test"), RB, resplit),
        # --- a checkpoint of another architecture ---------------------------------------------
        "runs3_resume_other_architecture": t(
            ["fit", "build", "--out", "run", *FIT2, "--resume"],
            ("run/checkpoints/epoch-000.keras", "does not match the model", "--overwrite"), RB,
            other_architecture),
        # --- names too long -------------------------------------------------------------------
        "runs3_build_out_name_too_long": b(["build", "data.npz", "--out", LONG, *COMMON],
                                           ("name too long",)),
        "runs3_fit_out_name_too_long": t(["fit", "build", "--out", LONG, *FIT],
                                         ("name too long",), ("build",)),
        "runs3_predict_out_name_too_long": t(["predict", "run", "u.npz", "--out", LONG + ".csv"],
                                             ("name too long",), ("run",), u),
    }


RUNS3_FULL_CASES: dict[str, Callable] = {  # "ro": the tmpfs is mounted read-only (EROFS)
    "runs3_ro_fit_out": full(TRAIN, ["fit", "build", "--out", "full/r", *FIT],
                             ("full/r", "Read-only file system"), "64k,ro", ("build",)),
    "runs3_ro_build_out": full(BUILD, ["build", "data.npz", "--out", "full/o", *COMMON],
                               ("full", "Read-only file system"), "64k,ro", ("data.npz",)),
    "runs3_ro_predict_out": full(TRAIN, ["predict", "run", "u.npz", "--out", "full/p.csv"],
                                 ("full/p.csv", "read-only"), "64k,ro", ("run",),
                                 npz("u.npz", images=imgs(4))),
    "runs3_ro_evaluate_out": full(TRAIN, ["evaluate", "run", "build", "--out", "full/e"],
                                  ("full/e", "read-only"), "64k,ro", ("run", "build")),
}


def register(cases: dict, full_cases: dict) -> None:
    cases.update(runs3_cases())
    full_cases.update(RUNS3_FULL_CASES)
