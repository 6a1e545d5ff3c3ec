import json

import pytest

from frozenaug import format as fmt
from frozenaug.builder.cli import build_parser
from frozenaug.builder.config import RUNTIME_ONLY, BuildConfig, load_build_config
from frozenaug.common.errors import InputError


def _args(*flags: str):
    return build_parser().parse_args(["build", "in.npz", "--out", "out", *flags])


def test_defaults():
    cfg = load_build_config(_args())
    assert (cfg.input, cfg.out) == ("in.npz", "out")
    assert cfg.epochs == 10 and cfg.policy == "heavy" and cfg.clean is True
    assert cfg.finish == "light:3"  # the recipe's finishing build, after the heavy preset
    assert cfg.shard_size == fmt.DEFAULT_SHARD_SIZE and cfg.size == (96, 96)
    assert cfg.backend == "loky" and cfg.jobs is None
    assert isinstance(cfg.threshold, int) and isinstance(cfg.outlier_min, int)


def test_file_then_flags(tmp_path):
    path = tmp_path / "build.yaml"
    path.write_text("epochs: 5\nseed: 7\npolicy: light\nshard-size: 100\nsplit: [0.5, 0.25, 0.25]\n"
                    "size: 32\nclasses: [a, b]\n")
    cfg = load_build_config(_args("--config", str(path), "--epochs", "2", "--no-clean"))
    assert cfg.epochs == 2  # the flag wins over the file
    assert (cfg.seed, cfg.policy, cfg.shard_size) == (7, "light", 100)
    assert cfg.split == (0.5, 0.25, 0.25) and cfg.size == (32, 32)
    assert cfg.classes == ["a", "b"] and cfg.clean is False

    path = tmp_path / "build.json"
    path.write_text(json.dumps({"epochs": 4, "size": [48, 64], "jobs": 2}))
    cfg = load_build_config(_args("--config", str(path)))
    assert (cfg.epochs, cfg.size, cfg.jobs) == (4, (48, 64), 2)


def test_unknown_key_names_file_key_and_allowed(tmp_path):
    path = tmp_path / "build.json"
    path.write_text(json.dumps({"epochs": 2, "epoch": 3}))
    with pytest.raises(InputError) as e:
        load_build_config(_args("--config", str(path)))
    msg = str(e.value)
    assert str(path) in msg and "'epoch'" in msg and "shard_size" in msg and "epochs" in msg


@pytest.mark.parametrize(
    ("content", "word"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": "3"}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"shard_size": 0}, "shard_size"),
        ({"jobs": 0}, "jobs"),
        ({"seed": -1}, "seed"),
        ({"strict": "yes"}, "strict"),
        ({"backend": "threads"}, "backend"),
        ({"policy": ""}, "policy"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_file_values(tmp_path, content, word):
    path = tmp_path / "build.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=word):
        load_build_config(_args("--config", str(path)))


@pytest.mark.parametrize(
    ("flags", "word"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--shard-size", "-5"], "--shard-size"),
        (["--jobs", "0"], "--jobs"),
        (["--scheduler", "tcp://x:1"], "--scheduler"),
        (["--backend", "dask"], "--backend dask"),
    ],
)
def test_bad_flags(flags, word):
    with pytest.raises(InputError, match=word):
        load_build_config(_args(*flags))


def test_unreadable_config_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_build_config(_args("--config", str(tmp_path / "nope.yaml")))
    bad = tmp_path / "bad.json"
    bad.write_text("{epochs: ")
    with pytest.raises(InputError, match="not valid"):
        load_build_config(_args("--config", str(bad)))


def test_to_dict_excludes_runtime_options():
    a = load_build_config(_args("--jobs", "1"))
    b = load_build_config(_args("--jobs", "2", "--overwrite"))
    b.out = "elsewhere"
    assert a.to_dict() == b.to_dict()
    d = a.to_dict()
    assert not set(RUNTIME_ONLY) & set(d)
    assert set(d) | set(RUNTIME_ONLY) | {"drop_family"} == {
        f for f in BuildConfig.__dataclass_fields__}  # drop_family: only when set
    assert json.loads(json.dumps(d)) == d  # JSON-ready as it will be stored
    assert load_build_config(_args("--seed", "1")).to_dict() != d


def test_no_clean_records_only_the_scan_parameters_given():
    cfg = load_build_config(_args())
    assert (cfg.threshold, cfg.outlier_min) == (4, 10)  # what the scan will use, recorded
    d = load_build_config(_args("--no-clean")).to_dict()
    assert d["threshold"] is None and d["outlier_min"] is None
    cfg = load_build_config(_args("--no-clean", "--threshold", "6"))
    assert (cfg.threshold, cfg.outlier_min) == (6, None)


def test_messages_name_the_flag_or_file_and_the_key(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("shard-size: 0\n")
    with pytest.raises(InputError) as e:
        load_build_config(_args("--config", str(path)))
    assert str(e.value) == f"{path}: shard_size: must be an integer in 1..2147483647, got 0"
    with pytest.raises(InputError) as e:
        load_build_config(_args("--shard-size", "0"))
    assert str(e.value) == ("--shard-size: must be an integer in 1..2147483647, got 0 "
                            "(shard_size=0)")


@pytest.mark.parametrize(("argv", "line"), [
    (["scan", "--outlier-min", "1"], "--outlier-min: must be an integer in 2..2147483647"),
    (["scan", "--jobs", "0"], "--jobs: must be an integer in 1..1024"),
    (["clean", "--seed", "-1"], "--seed: must be an integer in 0..9223372036854775807"),
    (["clean", "--split", "0.5,0.5"], "--split:"),
])
def test_scan_and_clean_flags_follow_the_build_rules(tmp_path, capsys, argv, line):
    from frozenaug.builder.cli import main

    out = tmp_path / "o"
    assert main([argv[0], str(tmp_path / "in.npz"), "--out", str(out), *argv[1:]]) == 2
    assert capsys.readouterr().err.startswith(f"frozenaug-build: error: {line}")
    assert not out.exists()
