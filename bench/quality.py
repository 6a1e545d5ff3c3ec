"""What frozen augmentation buys: accuracy, clean and under distortions nobody trained for.

    python bench/quality.py [--rows main,base,lofo,policy,k,mix,lazy] [--epochs 120]
                            [--main-policy heavy|heavy-mix|heavy-geo|heavy-compound]
                            [--main-model small_resnet|small_resnet_wide]
                            [--row-epochs 8] [--row-k 4] [--finish 3] [--fine-lr auto]
                            [--variants tta,adapt-bn,tta+adapt-bn] [--seeds 0,1,2]
                            [--out out/quality]

Runs the tool as a user does (``frozenaug-build build`` and ``frozenaug-train fit`` as
subprocesses) on the shared blood-cell set (``../shared/data/bloodcells``, unpacked once), and
scores every run on the build's own held-out test split, which no run sees in training or
model selection (EarlyStopping watches the val split):

* ``clean``: accuracy and macro-F1 on the test split as it is;
* ``compound``: the headline. Accuracy under the compound suite of trainer/assess/compound.py
  (every test image its own composition of 2-5 families at severity 3-5, seed 0, two of the
  eight families held out of every training preset); ``compound F1`` its macro-F1;
* ``dist``: mean accuracy under the six distortion families of trainer/assess/distort.py at
  severities 1..5, ``strong``: the same at severities 3..5 only;
* ``lofo`` rows: leave-one-family-out. The build's policy lacks family F
  (``--drop-family F``); the run is scored on distortions of family F only, at severities 1..5,
  and under composition: on the compound suite's images whose composition includes F (the
  same images and draws for every row, so the main row, trained on F, scores them too): how
  the tool copes with damage of a kind nobody anticipated, alone and among other damage.

Rows (each a build + fit; rows already done in ``--out`` are skipped, so an interrupted run
resumes). The main, base and lofo rows end with a finishing phase of ``--finish`` epochs on
the build's own finishing build (``build --finish light:3``: light K=3 of the same split; for
a lofo row it lacks the held-out family too), the recipe ``fit BUILD`` runs by default; every
other row builds none (``--finish none``) and has no finishing phase:

* ``main``: heavy policy, K=10, the default model and recipe, ``--epochs`` epochs; also scored
  with ``--tta`` (8 dihedral views), ``--adapt-bn`` and both (at severities 3..5 only).
  ``--main-policy`` swaps the policy (a lever of bench/policies/ at the recipe's length),
  ``--main-model`` the model;
* ``base``: heavy, K=``--row-k``, ``--row-epochs`` epochs: what the rows below compare with;
* ``lofo``: one row per family, otherwise as ``base``;
* ``policy``: none (K=1) and light beside base's heavy;
* ``k``: heavy with K=1 beside base's K;
* ``mix``: heavy (no frozen MixUp/CutMix) with MixUp/CutMix drawn anew each epoch (``--mix fresh``);
* ``kstudy``: heavy with K in ``--k-values`` (default 1, 2, 4, 8) at ``--k-epochs`` (8)
  training epochs, no finishing phase: how quality depends on K at a fixed training budget
  (K above the epochs is the same as K = epochs: no more frozen epochs are ever read);
* ``levers``: the policies of bench/policies/ (heavy-geo: geometric damage at the compound
  suite's strength; heavy-compound: that, and every family applied twice as often) at K=4,
  otherwise as the K study, whose K=4 row is their baseline. These rows are scored on the
  val split too (clean and compound), as the main row is (with its variants): a choice
  between rows, or between two ``--epochs`` of the main row, is made there, and the test
  split only reports it;
* ``ensemble``: with several ``--seeds``, the main row's runs of all seeds as one ensemble
  (``evaluate RUN1 RUN2 ...``), scored on val and test, plain and with the variants;
* ``lazy``: the policy applied lazily, fresh every epoch. Its accuracy is that of a build with
  K = epochs (each epoch a fresh draw: the same distribution as lazy augmentation); its time
  is the frozen build's time per epoch measured against two epochs of training with the same
  augmentation done inside tf.data (``lazy_epoch_s``).

``--seeds``: every row is trained once per fit seed (``fit --seed``) from the same build (build
seed 0: the same split, shards and test images), and the table ends with each row's mean and
standard deviation over the seeds: the spread of training (initialisation, batch order,
dropout), not of the split or of the frozen augmentation draws.

Prints a markdown table and writes it with all numbers to ``--out``/quality.md and
quality.json. Each row takes about (epochs x 20-30 s) on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from qualitylazy import lazy_epoch_seconds  # bench/
from qualitytables import FAMILIES, SEVERITIES, STRONG, spread, table, val_table  # bench/

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "bloodcells"
BIN = Path(sys.executable).parent
LEVERS = ("heavy-geo", "heavy-compound")  # bench/policies/*.yaml


def rows(epochs: int, row_epochs: int, row_k: int, finish: int,
         k_epochs: int = 8, k_values: tuple[int, ...] = (1, 2, 4, 8),
         main_policy: str = "heavy", main_model: str = "small_resnet",
         main_drop: str = "") -> dict[str, dict]:
    """name -> build flags, fit flags, what to score, group; in the order they run. ``fine``:
    the row ends with ``finish`` epochs on its build's finishing build (none when 0).
    ``main_policy``: the main row's policy, a preset or a bench/policies/ name (a lever at the
    recipe's full length); ``main_model``: its model; ``main_drop``: a family (or "mix") its
    build and finishing build leave out, a leave-one-out row at the recipe's length."""
    fit_row = ["--epochs-coarse", str(row_epochs)]
    k = str(row_k)
    finishing = bool(finish)  # on the build's own finishing build (build --finish light:3)
    then = f" + light {finish}" if finish else ""
    named = ROOT / "bench" / "policies" / f"{main_policy}.yaml"
    policy = str(named) if named.is_file() else main_policy
    model = "" if main_model == "small_resnet" else f", {main_model}"  # older rows' names
    drop = ["--drop-family", main_drop] if main_drop else []
    r: dict[str, dict] = {
        f"{main_policy} K=10{then}{model}{f' without {main_drop}' if main_drop else ''}": dict(
            group="main", build=["--policy", policy, "--epochs", "10", *drop],
            fit=["--epochs-coarse", str(epochs), "--model", main_model], fine=finishing,
            extra=True),
        # the baseline of every other row: same epochs, same K
        f"heavy K={k}{then}": dict(group="base", build=["--policy", "heavy", "--epochs", k],
                                   fit=fit_row, fine=finishing),
    }
    for f in FAMILIES:  # the finishing build lacks the family too
        r[f"heavy K={k}{then} without {f}"] = dict(
            group="lofo", family=f, build=["--policy", "heavy", "--drop-family", f,
                                           "--epochs", k], fit=fit_row,
            fine=finishing, extra=True)
    r.update({
        "none K=1": dict(group="policy", build=["--policy", "none", "--epochs", "1"],
                         fit=fit_row),
        f"light K={k}": dict(group="policy", build=["--policy", "light", "--epochs", k],
                             fit=fit_row),
        "heavy K=1": dict(group="k", build=["--policy", "heavy", "--epochs", "1"], fit=fit_row),
        f"heavy K={k}, MixUp/CutMix fresh": dict(
            group="mix", build=["--policy", "heavy", "--epochs", k],
            fit=[*fit_row, "--mix", "fresh"]),
        f"heavy lazy (K={row_epochs})": dict(
            group="lazy", build=["--policy", "heavy", "--epochs", str(row_epochs)], fit=fit_row,
            lazy=True),
    })
    # The K study and the levers: heavy, no finishing phase, k_epochs epochs; scored on val
    # (where a choice is made) and test, clean and compound only.
    short = ["--epochs-coarse", str(k_epochs), "--epochs-fine", "0"]
    for kv in k_values:
        r[f"K study: heavy K={kv}, {k_epochs} epochs"] = dict(
            group="kstudy", build=["--policy", "heavy", "--epochs", str(kv), "--finish", "none"],
            fit=short, quick=True)
    for lever in LEVERS:
        r[f"lever: {lever} K=4, {k_epochs} epochs"] = dict(
            group="levers", build=["--policy", str(ROOT / "bench" / "policies" / f"{lever}.yaml"),
                                   "--epochs", "4", "--finish", "none"], fit=short, quick=True)
    return r


def run_cli(argv: list[str], log: Path) -> float:
    """Run a console script; its output goes to ``log``; returns the wall time."""
    t = time.perf_counter()
    with open(log, "ab") as f:
        f.write(("$ " + " ".join(argv) + "\n").encode())
        f.flush()
        done = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env={
            **os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    if done.returncode:
        raise SystemExit(f"{argv[0]} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - t


# name -> (evaluate's --tta, --adapt-bn); d8: the 8 dihedral views and the same turned by 45 degrees
VARIANTS = {"tta": ("d4", False), "tta-d8": ("d8", False), "adapt-bn": (False, True),
            "tta+adapt-bn": ("d4", True)}


def score_run(run_dir: Path | list[Path], build: Path, family: str | None,
              extra: list[str] | tuple = tuple(VARIANTS), split: str = "test",
              single: bool = True) -> dict:
    """Clean and distorted accuracy of a run on its build's test split (or ``split``), plain
    and with each of the ``extra`` variants (names of VARIANTS); without ``single``, the
    compound suite only (no single-family table). Several runs: their ensemble."""
    from frozenaug.trainer.assess import tta as tta_module
    from frozenaug.trainer.assess.evaluate import load_inputs, load_runs, robustness, score

    run = load_runs(run_dir if isinstance(run_dir, list) else [run_dir])
    inputs = load_inputs(run, str(build), split)
    variants = [(False, False), *(VARIANTS[v] for v in extra)]
    out: dict = {}
    for tta, adapt in variants:
        key = ("plain" + {False: "", "d4": "+tta", "d8": "+tta-d8"}[tta]
               + ("+adapt-bn" if adapt else ""))
        t = time.perf_counter()
        proba = tta_module.predict_proba(run.model, inputs.images, 256, tta, adapt)
        m = score(inputs.labels, proba, run.class_names)
        # TTA costs 8x: the variants are scored at the strong severities only, but on a held-out
        # family (one family, not six) at every severity
        severities = SEVERITIES if key == "plain" or family else STRONG
        rob = robustness(run, inputs, severities, 0, 256, tta, adapt,
                         families=([family] if family else FAMILIES) if single else ())
        c = rob["compound"]  # the whole suite for every row: "with F" is a lofo row's score
        res = {"clean": m["accuracy"], "macro_f1": m["macro_f1"],
               "dist": {f"{fam}/{s}": v["accuracy"] for fam, row in rob["results"].items()
                        for s, v in row.items()},
               "compound": c["accuracy"], "compound_f1": c["macro_f1"],
               "compound_with": {f: v["accuracy"] for f, v in c["with"].items()},
               "eval_s": time.perf_counter() - t}
        out[key] = res
        print(f"  {key}: clean {res['clean']:.4f}, dist mean "
              f"{np.mean(list(res['dist'].values())):.4f}, compound {res['compound']:.4f} "
              f"({res['eval_s']:.0f} s)", flush=True)
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")


def ensemble_row(out: Path, every: dict[str, dict], seeds: list[int],
                 variants: list[str]) -> tuple[str, dict]:
    """The main row's runs of every seed as one ensemble (the mean of their softmax), scored
    on val (to choose) and test, clean and compound; its cost is the sum of theirs."""
    main = next(n for n, r in every.items() if r["group"] == "main")
    slug = _slug(main)
    names = [slug if s == 0 else f"{slug}-seed{s}" for s in seeds]
    done = out / "rows" / f"{slug}-ensemble-{'-'.join(map(str, seeds))}.json"
    if done.is_file():
        r = json.loads(done.read_text())
    else:
        members = [json.loads((out / "rows" / f"{n}.json").read_text()) for n in names]
        runs, build = [out / "runs" / n for n in names], out / "builds" / slug
        print(f"== {main}, ensemble of seeds {seeds}", flush=True)
        fit_s = sum(m["fit_s"] for m in members)
        r = {"group": "ensemble", "seed": "+".join(map(str, seeds)),
             "build_s": members[0]["build_s"],
             "fit_s": fit_s, "epochs": sum(m["epochs"] for m in members),
             "epoch_s": fit_s / sum(m["epochs"] for m in members), "family": None,
             "scores": score_run(runs, build, None, variants, single=False),
             "val": score_run(runs, build, None, variants, split="val", single=False)}
        save(done, r)
    r["base"] = f"{main}, ensemble of {len(seeds)} seeds"
    return r["base"], r


def save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED), help="folder of the shared blood-cell set")
    ap.add_argument("--out", default=str(ROOT / "out" / "quality"))
    ap.add_argument("--rows", default="main,base,lofo,policy,k,mix,lazy")
    ap.add_argument("--epochs", type=int, default=120, help="epochs of the main row")
    ap.add_argument("--main-policy", default="heavy",
                    help="the main row's policy: a preset, or a lever of bench/policies/ "
                         f"({', '.join(LEVERS)}) at the recipe's length")
    ap.add_argument("--main-model", default="small_resnet", help="the main row's model")
    ap.add_argument("--main-drop-family", default="", choices=["", *FAMILIES, "mix"],
                    help="a family (or mix, the MixUp/CutMix stage) the main row's builds leave "
                         "out: leave one out at the recipe's length")
    ap.add_argument("--row-epochs", type=int, default=8, help="epochs of the other rows")
    ap.add_argument("--row-k", type=int, default=4, help="frozen epochs K of the other rows")
    ap.add_argument("--finish", type=int, default=3,
                    help="epochs of the light finishing phase (on build --finish light:3) of "
                         "the main, base and lofo rows; 0: none")
    ap.add_argument("--fine-lr", default="auto",
                    help="its peak learning rate (fit's auto: 2e-4 from scratch)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="what the main and lofo rows are scored with besides plain: "
                         f"{', '.join(VARIANTS)} (comma-separated; '' for none)")
    ap.add_argument("--k-epochs", type=int, default=8,
                    help="epochs of the K study and lever rows (K above it reads as K = it)")
    ap.add_argument("--k-values", default="1,2,4,8", help="the K study's frozen epochs K")
    ap.add_argument("--seeds", default="0",
                    help="fit seeds, comma-separated: each row is trained once per seed from "
                         "the same build; the table adds mean and standard deviation")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "train.npz"
    if not npz.is_file():
        subprocess.run([sys.executable, str(Path(args.data) / "unpack.py"), str(npz)],
                       check=True)
    groups = set(args.rows.split(","))
    results: dict[str, dict] = {}
    variants = [v for v in args.variants.split(",") if v]
    if set(variants) - set(VARIANTS):
        ap.error(f"--variants: choose among {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    every = rows(args.epochs, args.row_epochs, args.row_k, args.finish, args.k_epochs,
                 tuple(int(k) for k in args.k_values.split(",")), args.main_policy,
                 args.main_model, args.main_drop_family)
    for (name, row), seed in ((r, s) for r in every.items() for s in seeds):
        if row["group"] not in groups:
            continue
        slug = _slug(name)
        build = out / "builds" / slug  # one build per row, whatever the fit seed
        if seed:  # seed 0 keeps the names of runs made before --seeds
            name, slug = f"{name}, seed {seed}", f"{slug}-seed{seed}"
        done = out / "rows" / f"{slug}.json"
        if done.is_file():
            results[name] = json.loads(done.read_text())
            continue
        print(f"== {name}", flush=True)
        run, log = out / "runs" / slug, out / f"{slug}.log"
        build.parent.mkdir(exist_ok=True)
        run.parent.mkdir(exist_ok=True)
        times = out / "rows" / f"{slug}.times.json"  # a finished build and fit are kept
        t = json.loads(times.read_text()) if times.is_file() else {}
        # the finishing phase reads the build's own finishing build (light K=3, and without a
        # dropped family too), as fit BUILD does; a row without one builds none
        build_flags, fit_flags = list(row["build"]), list(row["fit"])
        if row.get("fine"):
            build_flags += ["--finish", "light:3"]
            fit_flags += ["--epochs-fine", str(args.finish), "--fine-lr", str(args.fine_lr)]
        elif "--finish" not in build_flags:
            build_flags += ["--finish", "none"]
        if "build_s" not in t:  # a build another seed made is up to date (even while a
            # fit of that seed reads it, in another process): seconds to check
            t["build_s"] = run_cli([str(BIN / "frozenaug-build"), "build", str(npz), "--out",
                                    str(build), "--seed", "0", "--jobs", str(args.jobs),
                                    "--overwrite", *build_flags], log)
            save(times, t)
        if "fit_s" not in t:
            t["fit_s"] = run_cli([str(BIN / "frozenaug-train"), "fit", str(build), "--out",
                                  str(run), "--overwrite", "--seed", str(seed), *fit_flags], log)
            save(times, t)
        build_s, fit_s = t["build_s"], t["fit_s"]
        epochs = len(json.loads((run / "state.json").read_text())["history"])
        r = {"group": row["group"], "seed": seed, "base": name.split(", seed ")[0],
             "build_s": build_s, "fit_s": fit_s,
             "epochs": epochs, "epoch_s": fit_s / max(epochs, 1), "family": row.get("family"),
             "scores": score_run(run, build, row.get("family"),
                                 variants if row.get("extra") else (),
                                 single=not row.get("quick"))}
        if row.get("quick") or row["group"] == "main":  # where a choice between rows is made
            r["val"] = score_run(run, build, None, variants if row.get("extra") else (),
                                 split="val", single=False)
        if row.get("lazy"):
            r["lazy_epoch_s"] = lazy_epoch_seconds(build, out)
        save(done, r)
        results[name] = r
    if "ensemble" in groups and len(seeds) > 1:
        name, r = ensemble_row(out, every, seeds, variants)
        results[name] = r
    text = table(results) + spread(results) + val_table(results)
    lazy = [f"{n}: lazy {r['lazy_epoch_s']:.1f} s/epoch against frozen {r['epoch_s']:.1f}"
            for n, r in results.items() if "lazy_epoch_s" in r]
    text += "\n" + "\n".join(lazy)
    print(text)
    (out / "quality.md").write_text(text + "\n")
    (out / "quality.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
