import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from frozenaug import format as fmt
from frozenaug.builder.cli import main
from frozenaug.common.atomic import write_json
from frozenaug.common.errors import InputError


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(input npz, a finished build of it): 45 images 32x32, 3 classes, K=2, heavy-mix (mixes)."""
    root = tmp_path_factory.mktemp("built")
    rng = np.random.default_rng(1)
    inp = root / "in.npz"
    np.savez(inp, images=rng.integers(0, 256, (45, 32, 32, 3), dtype=np.uint8),
             labels=(np.arange(45) % 3).astype(np.uint8).reshape(-1, 1))
    out = root / "build"
    assert main(["build", str(inp), "--out", str(out), "--size", "32", "--epochs", "2",
                 "--shard-size", "12", "--jobs", "1", "--policy", "heavy-mix"]) == 0
    return inp, out


@pytest.fixture
def copy(built, tmp_path) -> Path:
    dst = tmp_path / "build"
    shutil.copytree(built[1], dst)
    return dst


def test_verify_ok(built, capsys):
    assert main(["verify", str(built[1])]) == 0
    m = fmt.load_manifest(built[1])
    n, k = len(m.shards), len(fmt.load_manifest(m.finish_dir).shards)  # and its finishing build
    assert capsys.readouterr().out.strip().splitlines() == [
        f"OK {n} shards", f"OK {k} shards in {m.finish_dir}"]


def test_verify_names_each_bad_shard(copy, capsys):
    m = fmt.load_manifest(copy)
    flipped, truncated, missing = (m.path_of(s) for s in m.shards[:3])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:2000])
    missing.unlink()
    assert main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err
    lines = {line.split(": ", 1)[0]: line for line in err.splitlines() if ": " in line}
    assert "sha256" in lines[str(flipped)]
    assert "sha256" in lines[str(truncated)] and "HDF5" in lines[str(truncated)]
    assert "missing" in lines[str(missing)]
    assert "FAILED" in err
    assert str(m.path_of(m.shards[3])) not in lines


def test_verify_checks_contents_against_manifest(copy, capsys):
    raw = json.loads((copy / fmt.MANIFEST_NAME).read_text())
    raw["shards"][0]["class_counts"][0] += 1
    raw["shards"][0]["class_counts"][1] -= 1
    raw["shards"][1]["samples"] += 1
    write_json(copy / fmt.MANIFEST_NAME, raw)
    assert main(["verify", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "class counts" in err and "dataset 'images'" in err


def test_verify_not_a_build(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_inspect(built, capsys):
    assert main(["inspect", str(built[1])]) == 0
    out = capsys.readouterr().out
    m = fmt.load_manifest(built[1])
    assert m.raw["policy_hash"][:16] in out and "heavy" in out and str(built[0]) in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["train"], ["val"])]
    assert [r[:2] for r in rows] == [["train", "0"], ["train", "1"], ["val", "-"]]
    assert int(rows[0][3]) == m.raw["split"]["counts"]["train"]


def test_preview(built, tmp_path, capsys):
    png = tmp_path / "grid.png"
    assert main(["preview", str(built[1]), "--out", str(png), "--n", "3"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3 samples" in capsys.readouterr().out
    assert main(["preview", str(built[1]), "--out", str(png), "--n", "0"]) == 2
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((45, 32, 32, 3), np.uint8),
             labels=(np.arange(45) % 3).astype(np.uint8).reshape(-1, 1))
    assert main(["preview", str(built[1]), "--out", str(png), "--input", str(other)]) == 2
    assert "fingerprint" in capsys.readouterr().err


def _damage(build: Path, how: str) -> tuple[Path, str]:
    """Change one train shard in a way only the full format check sees; (shard, the phrase
    the check must report)."""
    m = fmt.load_manifest(build)
    path = m.path_of(m.shards_of("train", 0)[0])
    with h5py.File(path, "r+") as f:
        if how == "extra_dataset":
            f["notes"] = np.zeros(3)
            return path, "unexpected dataset 'notes'"
        if how == "policy_hash":
            f.attrs[fmt.ATTR_POLICY_HASH] = "another policy"
            return path, "attribute policy_hash is 'another policy', manifest says"
        if how == "label_dtype":
            labels = f[fmt.DS_LABELS][()]
            del f[fmt.DS_LABELS]
            f[fmt.DS_LABELS] = labels.astype(np.int64)
            return path, "dataset 'labels' is int64"
        if how == "soft_labels":
            f[fmt.DS_SOFT_LABELS][0] = 0.9  # a row summing to C * 0.9
            return path, "soft_labels rows are not distributions"
        f[fmt.DS_SOURCE_INDEX][0] = 10_000  # the input has 45 rows
        return path, "source_index outside 0..45-1"


@pytest.mark.parametrize("how", ["extra_dataset", "policy_hash", "label_dtype", "soft_labels",
                                 "source_index"])
def test_verify_reader_and_preview_run_one_check(how, copy, tmp_path, capsys):
    from frozenaug.trainer.read.stream import ShardStream

    bad, phrase = _damage(copy, how)
    assert main(["verify", str(copy)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{bad}: ")]
    assert len(lines) == 1 and phrase in lines[0], lines
    with pytest.raises(InputError, match=f"^{re.escape(str(bad))}: ") as e:
        ShardStream(copy)
    assert phrase in str(e.value)
    assert main(["preview", str(copy), "--out", str(tmp_path / "p.png"), "--n", "2"]) == 2
    assert phrase in capsys.readouterr().err and not (tmp_path / "p.png").exists()
