"""The build directory's state on disk: what is being built, what is finished, who may write.

``BuildDir(out)`` owns every path the builder writes besides the shards themselves:

* ``.work/plan.json``          the build key (config, input fingerprint, policy hash, version)
  and the library versions (``common.libversions``);
* ``.work/splits.npz`` and ``.work/scan_summary.json``  the clean/split result, kept for a resume;
* ``.work/input.npy``          the input pixels that the workers memory-map;
* ``.work/done/<shard>.json``  one marker per finished shard (its manifest entry);
* ``manifest.json``            written last by ``finish``, after which ``.work`` is removed.

``prepare`` decides, from what is there, between "up to date", "resume" and "fresh", and refuses
a folder that holds another build or somebody else's files unless ``overwrite`` is set.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frozenaug import format as fmt
from frozenaug.builder.config import BuildConfig
from frozenaug.builder.write.shards import sha256_file
from frozenaug.common.atomic import atomic_path, remove_stale_temporaries, write_json
from frozenaug.common.errors import InputError
from frozenaug.common.libversions import pixel_differences
from frozenaug.common.lock import LOCK_NAME
from frozenaug.common.owned import removable, remove
from frozenaug.common.safeparse import read_json

WORK = ".work"
# What a build writes into its folder; --overwrite removes these names and nothing else.
CLEAN_NAMES = ("scan.json", "scan.png", "split.json")
BUILD_NAMES = (fmt.MANIFEST_NAME, WORK, *fmt.SPLITS, *CLEAN_NAMES, fmt.FINISH_DIR)
# A folder holding only what `frozenaug-build clean` wrote may take a build.
_CLEAN_OUTPUTS = {*CLEAN_NAMES, "cleaned.npz", LOCK_NAME}  # and the lock this build holds
# The files a build writes inside each of its folders: --overwrite removes a folder only when
# everything in it matches (a train/ folder of somebody's images is never removed).
OWN_FILES = {
    WORK: ("plan.json", "splits.npz", "scan_summary.json", "input.npy", "done/*.json",
           ".tmp-*", "done/.tmp-*"),
    "train": ("epoch-[0-9][0-9][0-9]/shard-[0-9][0-9][0-9][0-9][0-9].h5", ".tmp-*",
              "epoch-[0-9][0-9][0-9]/.tmp-*"),
    "val": ("shard-[0-9][0-9][0-9][0-9][0-9].h5", ".tmp-*"),
    "test": ("shard-[0-9][0-9][0-9][0-9][0-9].h5", ".tmp-*"),
}
# The finishing build (write.finish) is a build of its own, one level down.
OWN_FILES["finish"] = (fmt.MANIFEST_NAME, *CLEAN_NAMES, LOCK_NAME, ".tmp-*",
                       *(f"{d}/{p}" for d, pats in OWN_FILES.items() for p in pats))
_KEY_FIELDS = ("input_fingerprint", "policy_hash", "frozenaug_version")

UP_TO_DATE, RESUME, FRESH = "up to date", "resume", "fresh"


def build_key(cfg: BuildConfig, input_fingerprint: str, policy_hash: str, version: str) -> dict:
    """Everything that decides a build's bytes; equal keys may share (resume) shards."""
    return {"config": cfg.to_dict(), "input_fingerprint": input_fingerprint,
            "policy_hash": policy_hash, "frozenaug_version": version}


def _manifest_key(raw: Any) -> dict | None:
    try:
        return {"config": raw["config"], "input_fingerprint": raw["input"]["fingerprint"],
                "policy_hash": raw["policy_hash"], "frozenaug_version": raw["frozenaug_version"]}
    except (KeyError, TypeError):
        return None


def _finish_intact(out: Path, finish: dict) -> bool:
    """The finishing build a manifest names is there as it was recorded, every shard too."""
    if not fmt.finish_matches(out, finish):
        return False
    manifest = out / fmt.FINISH_DIR / fmt.MANIFEST_NAME
    raw = _read_json(manifest)
    shards = raw.get("shards") if isinstance(raw, dict) else None
    return isinstance(shards, list) and all(
        isinstance(s, dict) and (manifest.parent / str(s.get("path"))).is_file() for s in shards)


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError, InputError):
        return None


def _versions_allow_resume(recorded: Any, current: dict, where: Path, overwrite: bool) -> bool:
    """True when the finished shards may be kept; False when ``overwrite`` is to start the build
    afresh; an InputError naming the versions otherwise (libversions.pixel_differences)."""
    differ = pixel_differences(recorded, current)
    if not differ:
        return True
    if overwrite:
        return False
    raise InputError(f"{where.parent}: its finished shards were written under other library "
                     f"versions ({', '.join(differ)}; see {where}), which give other pixels "
                     "for the same seed; resume with those versions installed, or pass "
                     "--overwrite to build it again under these")


def _differences(old: Any, new: dict) -> str:
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        return "unreadable or not a frozenaug build"
    keys = sorted(set(old["config"]) | set(new["config"]))
    diff = [f"config.{k}" for k in keys if old["config"].get(k) != new["config"].get(k)]
    return ", ".join(diff + [k for k in _KEY_FIELDS if old.get(k) != new[k]])


@dataclass(frozen=True)
class BuildDir:
    """One build folder. Small and picklable: the workers get it to mark their shards done."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / WORK

    @property
    def input_npy(self) -> Path:
        return self.work / "input.npy"

    def done_path(self, relpath: str) -> Path:
        return self.work / "done" / (relpath.replace("/", "__") + ".json")

    def _complete(self, raw: dict) -> bool:
        """Every shard a manifest lists is there, and its finishing build if it names one."""
        finish = raw.get("finish")
        return all((self.root / s["path"]).is_file() for s in raw["shards"]) and (
            not isinstance(finish, dict) or _finish_intact(self.root, finish))

    def is_current(self, key: dict) -> bool:
        """True when the folder holds the build of ``key``, complete. Reads only, so a reader's
        shared lock is enough to ask."""
        raw = _read_json(self.root / fmt.MANIFEST_NAME)
        return (_manifest_key(raw) == key and isinstance(raw.get("shards"), list)
                and self._complete(raw))

    def clear_work(self) -> None:
        """Remove ``.work``, left behind by a build killed between writing its complete manifest
        and removing it. Safe under a reader's shared lock: only a build holding the exclusive
        one uses ``.work``, and a complete manifest is written after its last use."""
        shutil.rmtree(self.work, ignore_errors=True)

    def prepare(self, key: dict, *, overwrite: bool, inputs: tuple = (),
                versions: dict | None = None) -> str:
        """Decide between ``UP_TO_DATE``, ``RESUME`` and ``FRESH`` (clearing a replaced build).

        ``inputs`` (the data set, config and policy files) are never removed, nor a folder
        holding one; ``--overwrite`` removes only what a build writes (``OWN_FILES``).
        ``versions`` (``common.libversions``) go into the plan; a resume of shards written
        under other pixel-library versions is refused (or, with ``overwrite``, started fresh).

        Raises:
            InputError: the folder holds another build, or other files, and ``overwrite`` is
                off; or clearing it would remove an input or files a build did not write.
        """
        out = self.root
        manifest, plan = out / fmt.MANIFEST_NAME, self.work / "plan.json"
        found: tuple[Path, Any] | None = None
        versions = versions or {}
        if manifest.is_file():
            raw = _read_json(manifest)
            if _manifest_key(raw) == key:
                if self._complete(raw):
                    self.clear_work()
                    return UP_TO_DATE  # nothing is written: no mix of versions
                if _versions_allow_resume(raw.get("library_versions"), versions, manifest,
                                          overwrite):
                    # A shard (or the finishing build) went missing: resume, keeping the listed
                    # shards whose bytes match.
                    write_json(plan, {**key, "library_versions": versions})
                    for s in raw["shards"]:
                        if (out / s["path"]).is_file():
                            write_json(self.done_path(s["path"]), s)
                    manifest.unlink()
                    return RESUME
            else:
                found = (manifest, _manifest_key(raw))
        elif plan.is_file():
            old = _read_json(plan)
            recorded = old.pop("library_versions", None) if isinstance(old, dict) else None
            if old == key:
                if _versions_allow_resume(recorded, versions, plan, overwrite):
                    return RESUME
            else:
                found = (plan, old)
        elif (out.is_dir() and any(p.name not in _CLEAN_OUTPUTS for p in out.iterdir())
              and not overwrite):
            raise InputError(
                f"{out}: not empty and holds no frozenaug build; choose an empty folder, or "
                f"pass --overwrite (removes only {', '.join(BUILD_NAMES)} there)"
            )
        if found is not None and not overwrite:
            raise InputError(
                f"{out}: holds a build of another config or input (differs in: "
                f"{_differences(found[1], key)}; see {found[0]}); pass --overwrite to replace "
                "it, or choose another --out"
            )
        if out.is_dir():
            remove(removable(out, BUILD_NAMES, OWN_FILES, inputs))  # checks all, then removes
            remove_stale_temporaries(out)
        write_json(plan, {**key, "library_versions": versions})
        return FRESH

    def discard(self) -> None:
        """Undo a fresh build that failed on bad input: no half-started build stays behind."""
        for name in (WORK, *fmt.SPLITS, fmt.FINISH_DIR):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in CLEAN_NAMES:  # a fresh build cleared them first: these are its own
            (self.root / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()  # only if empty

    def save_clean(self, splits: dict[str, np.ndarray], scan_summary: dict | None) -> None:
        write_json(self.work / "scan_summary.json", {"scan": scan_summary})
        with atomic_path(self.work / "splits.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **splits)  # written last: its presence means both files are complete

    def load_clean(self) -> tuple[dict[str, np.ndarray], dict | None] | None:
        """The splits and scan summary a previous run saved, or None."""
        npz, summary = self.work / "splits.npz", _read_json(self.work / "scan_summary.json")
        if not npz.is_file() or not isinstance(summary, dict):
            return None
        with np.load(npz) as z:
            return {k: z[k].astype(np.int64) for k in z.files}, summary["scan"]

    def write_input(self, images: np.ndarray, store: Any = None) -> None:
        """Save the input once for the workers' memory maps (kept if a resumed build has it;
        the plan's input fingerprint already says it holds these pixels). ``store``, the
        intake's ``ImageFile`` under ``images``, is given the name instead of a copy."""
        path = self.input_npy
        if path.is_file():
            try:
                old = np.load(path, mmap_mode="r")
                if old.shape == images.shape and old.dtype == images.dtype:
                    return
            except (OSError, ValueError):
                pass
        if store is not None:
            store.save_as(path)
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(images))

    def remove_stale(self, relpaths: Iterable[str]) -> None:
        """Delete what interrupted atomic writes left in the shard and work folders."""
        folders = {self.root, self.work, self.work / "done"}
        folders |= {(self.root / rel).parent for rel in relpaths}
        for folder in folders:
            remove_stale_temporaries(folder)

    def mark_done(self, entry: fmt.ShardEntry) -> None:
        write_json(self.done_path(entry.path), entry.to_dict())

    def finished_shards(self, relpaths: Iterable[str]) -> dict[str, fmt.ShardEntry]:
        """Shards a previous run finished whose files still hash to what it recorded."""
        kept = {}
        for rel in relpaths:
            d = _read_json(self.done_path(rel))
            if not isinstance(d, dict):
                continue
            try:
                entry = fmt.ShardEntry.from_dict(d)
            except (KeyError, TypeError, ValueError):
                continue
            path = self.root / rel
            if entry.path == rel and path.is_file() and sha256_file(path) == entry.sha256:
                kept[rel] = entry
        return kept

    def finish(self, manifest: dict) -> None:
        """Write the manifest (from here on the build exists), then drop the work folder."""
        write_json(self.root / fmt.MANIFEST_NAME, manifest)
        shutil.rmtree(self.work, ignore_errors=True)
