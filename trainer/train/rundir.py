"""The run folder of ``fit``: what it may hold, the checks before a start, and its making.

``check_run_dir`` only reads, so fit calls it before anything can fail; ``prepare_run_dir``
writes, after every check has passed.
"""

from __future__ import annotations

from pathlib import Path

from frozenaug.common.atomic import TMP_PREFIX, remove_stale_temporaries, write_json
from frozenaug.common.disk import check_free_space
from frozenaug.common.errors import InputError
from frozenaug.common.lock import LOCK_NAME
from frozenaug.common.owned import removable, remove
from frozenaug.common.safeparse import read_json
from frozenaug.trainer import config as cfgmod
from frozenaug.trainer import layout
from frozenaug.trainer.layout import (
    FIT_OWN,
    RUN_FILES,
    fit_inputs,
)

# What fit writes into a run directory; --overwrite removes only these.



def check_run_dir(run: Path, cfg: cfgmod.FitConfig, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run continues only with --resume and the same config.

    Only reads: fit calls it before anything can fail, and writes (``prepare_run_dir``) after.
    """
    if run.exists() and not run.is_dir():
        raise InputError(f"{run}: exists and is not a folder")
    # A full disk is refused now, not by HDF5 mid-epoch (which can crash the process): a run
    # holds ~6 float32 copies of the parameters (model, checkpoint + Adam slots, best, coarse).
    existing = next(p for p in (run.absolute(), *run.absolute().parents) if p.exists())
    params = {"simple_cnn": 2e6, "small_resnet": 2e6, "small_resnet_wide": 6e6,
              "efficientnetv2b0": 7e6, "efficientnetv2b3": 14e6, "convnext_tiny": 29e6,
              "convnext_small": 50e6}.get(cfg.model, 89e6)
    if existing.is_dir():
        check_free_space(existing, int(params * 4 * 6), str(run))
    if not run.is_dir():
        return
    cfg_path = run / layout.CONFIG_NAME
    if cfg_path.is_file() and not overwrite:
        stored = cfgmod.load_run_config(run)
        diff = cfgmod.config_differences(stored, cfg)
        if diff:
            raise InputError(
                f"{run}: holds a run of another config (differs in {', '.join(diff)}); "
                "repeat the run's own settings, or pass --overwrite to replace it"
            )
        if not resume:
            raise InputError(
                f"{run}: holds a run of this config already; pass --resume to continue it "
                "or --overwrite to start again"
            )
        return
    if overwrite:  # only fit's own files, never the build, the weights or someone's folder
        removable(run, RUN_FILES, FIT_OWN, fit_inputs(cfg.build_dir, cfg.weights, cfg.fine_build))
    # What would be left: --overwrite removes fit's own files; a kill's temporaries never count.
    others = [p.name for p in run.iterdir() if not p.name.startswith(TMP_PREFIX)
              and p.name != LOCK_NAME and not (overwrite and p.name in RUN_FILES)]
    if others:
        raise InputError(
            f"{run}: not empty and not a frozenaug-train run (no {layout.CONFIG_NAME}); "
            "choose a new folder or pass --overwrite"
        )


def prepare_run_dir(run: Path, cfg: cfgmod.FitConfig, *, overwrite: bool) -> None:
    """Make (or clear, with --overwrite) the run folder checked by ``check_run_dir``.

    Also deletes the ``.tmp-*`` files that a kill during an atomic write left in RUN and
    RUN/checkpoints; nothing else writes there while fit runs.
    """
    if overwrite:
        inputs = fit_inputs(cfg.build_dir, cfg.weights, cfg.fine_build)
        remove(removable(run, RUN_FILES, FIT_OWN, inputs))
    for folder in (run, run / layout.CHECKPOINT_DIR):
        remove_stale_temporaries(folder)
    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / layout.CONFIG_NAME
    wanted, stored = cfg.to_dict(), None
    if cfg_path.is_file():  # a resume (checked: same config): record changed check keys only
        stored = read_json(cfg_path, "run config")
        wanted = {**stored, **{k: wanted[k] for k in cfgmod.CHECK_KEYS}}
    if wanted != stored:
        write_json(cfg_path, wanted)
    (run / layout.CHECKPOINT_DIR).mkdir(exist_ok=True)
