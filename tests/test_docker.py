"""The Dockerfile installs what setup.cfg declares, on the TensorFlow image setup.cfg pins, and
the README's Docker section shows commands that work in that image.

The image itself is built and run by `make docker-test` (docker/test.sh), not here: it needs
podman and several minutes.
"""

import configparser
import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from frozenaug.builder.cli import build_parser as build_cli
from frozenaug.trainer.cli import build_parser as train_cli

ROOT = Path(__file__).resolve().parents[1]
CLIS = {"frozenaug-build": build_cli, "frozenaug-train": train_cli}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _extras(cfg: configparser.ConfigParser) -> dict[str, list[Requirement]]:
    return {
        name: [Requirement(line) for line in value.strip().splitlines() if line.strip()]
        for name, value in cfg["options.extras_require"].items()
    }


def _base_image() -> str:
    """The default of the Dockerfile's BASE_IMAGE argument, which the first stage is built on."""
    text = _dockerfile()
    arg = re.search(r"^ARG BASE_IMAGE=(\S+)\s*$", text, re.M)
    assert arg, "Dockerfile has no `ARG BASE_IMAGE=<default>` (make docker-test overrides it)"
    first_from = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert first_from == "${BASE_IMAGE}", f"the first stage is built on {first_from}"
    return arg.group(1)


def _volumes() -> set[str]:
    (line,) = re.findall(r"^VOLUME \[(.*)\]", _dockerfile(), re.M)
    return set(re.findall(r'"(/\w+)"', line))


def _readme_docker_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Docker on GPU servers", 1)[1].split("\n## ", 1)[0]


def _readme_shell_commands() -> list[list[str]]:
    """The section's ```bash block as argv lists: continuations joined, comments dropped, and the
    one shell expansion it uses replaced as a shell on a 4-core machine would."""
    block = re.search(r"```bash\n(.*?)```", _readme_docker_section(), re.S)
    assert block, "README's Docker section has no ```bash block"
    joined = block.group(1).replace("\\\n", " ").replace("$(nproc)", "4")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()
            and not line.lstrip().startswith("#")]


def _split_docker_run(argv: list[str]) -> tuple[list[tuple[str, bool]], str, list[str]]:
    """``docker run [opts] IMAGE CMD...`` -> ([(container path, read-only)], IMAGE, CMD)."""
    assert argv[:2] == ["docker", "run"], argv
    mounts, i = [], 2
    while argv[i].startswith("-"):
        opt = argv[i]
        if opt in ("-v", "--volume"):
            _, dst, *mode = argv[i + 1].split(":")
            mounts.append((dst, mode == ["ro"]))
        i += 1 if opt == "--rm" else 2  # the README's other options (--gpus, --user) take a value
    return mounts, argv[i], argv[i + 1:]


def test_base_image_tensorflow_matches_the_pinned_range():
    tag = re.fullmatch(r"tensorflow/tensorflow:(\S+)-gpu", _base_image())
    assert tag, "the default base must be the official tensorflow/tensorflow:<version>-gpu image"
    version = tag.group(1)
    extras = _extras(_setup_cfg())
    for extra in ("cpu", "gpu"):
        (tf,) = [r for r in extras[extra] if r.name.startswith("tensorflow")]
        assert tf.specifier.contains(version), f"image TF {version} outside [{extra}] {tf}"


def test_installs_this_package_with_declared_extras_and_not_editable():
    installs = re.findall(r"pip install ([^\n]*)", _dockerfile())
    assert installs, "Dockerfile installs nothing with pip"
    (line,) = installs
    assert "-e" not in line.split() and "--editable" not in line
    target = re.search(r"\"?\.\[([\w,]+)\]\"?", line)
    assert target, f"pip install line does not install the package itself: {line}"
    extras = set(target.group(1).split(","))
    declared = set(_extras(_setup_cfg()))
    assert extras <= declared, f"extras {extras - declared} are not declared in setup.cfg"
    # The image brings its own TensorFlow; tensorflow-cpu on top would replace it.
    assert "cpu" not in extras


def test_copies_every_package_folder_setup_cfg_maps():
    folders = {line.split("=")[1].strip() for line in
               _setup_cfg()["options"]["package_dir"].strip().splitlines()}
    assert folders == {"frozenaug", "builder", "trainer"}
    text = _dockerfile()
    for folder in folders:
        assert re.search(rf"^COPY {folder} ", text, re.M), f"Dockerfile does not copy {folder}/"


def test_runs_as_non_root_with_environment_and_volumes():
    text = _dockerfile()
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "NO_ALBUMENTATIONS_UPDATE=1" in text
    assert "HDF5_USE_FILE_LOCKING=FALSE" in text
    assert _volumes() == {"/data", "/shards", "/runs"}


def test_smoke_stage_is_not_what_a_plain_build_ships():
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?\s*$", _dockerfile(), re.M)
    names = [name for _, name in stages]
    assert "test" in names, "no `test` stage for make docker-test"
    # A plain `docker build` ships the last stage: the runtime image, not the smoke test.
    assert stages[-1] == ("runtime", ""), f"the last stage is {stages[-1]}, not `FROM runtime`"
    test_stage = _dockerfile().split("AS test\n", 1)[1].split("\nFROM ", 1)[0]
    assert not re.search(r"^USER ", test_stage, re.M), "the smoke test must run as the image user"


def test_smoke_script_uses_only_the_image_volumes():
    smoke = (ROOT / "docker" / "smoke.sh").read_text()
    commands = [line for line in smoke.splitlines() if line.startswith("frozenaug-")]
    assert {c.split()[0] for c in commands} == set(CLIS)
    assert [c.split()[1] for c in commands] == ["scan", "build", "verify", "fit", "evaluate"]
    paths = {p for c in commands for p in re.findall(r"\s(/[\w/.-]+)", c)}
    roots = {"/" + p.split("/")[1] for p in paths}
    assert roots == _volumes(), f"smoke paths {sorted(paths)} are not on the image volumes"
    copied = re.search(r"^COPY --chown=1000:1000 (\S+) (\S+)$", _dockerfile(), re.M)
    assert copied and copied.group(2) == "/data/sample", "the sample is not copied to /data"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore.index(f"!{copied.group(1)}") > ignore.index("data"), ".dockerignore drops it"


def test_readme_commands_run_in_the_image_they_build():
    commands = _readme_shell_commands()
    builds = [c for c in commands if c[:2] == ["docker", "build"]]
    assert builds == [["docker", "build", "-t", "frozenaug", "."]], builds
    runs = [c for c in commands if c[:2] == ["docker", "run"]]
    assert runs and len(runs) + len(builds) == len(commands), "a command that is neither"
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    installed = {line.split("=")[0].strip() for line in scripts.strip().splitlines()}
    assert installed == set(CLIS)
    for argv in runs:
        mounts, image, command = _split_docker_run(argv)
        assert image == "frozenaug", f"runs image {image}, builds frozenaug"
        assert command[0] in installed, f"{command[0]} is not a console script of the image"
        try:  # the real parser of the tool: a misspelt flag or subcommand fails here
            args = CLIS[command[0]]().parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"README's command does not parse: {shlex.join(command)}")
        assert {dst for dst, _ in mounts} <= _volumes(), f"mounts a non-volume: {argv}"
        for path in [a for a in command[1:] if a.startswith("/")]:
            assert any(Path(path).is_relative_to(dst) for dst, _ in mounts), \
                f"{path} is on no mounted volume in: {shlex.join(argv)}"
        writable = [dst for dst, ro in mounts if not ro]
        assert any(Path(args.out).is_relative_to(dst) for dst in writable), \
            f"--out {args.out} is not on a writable mount in: {shlex.join(argv)}"


def test_readme_docker_section_matches_the_dockerfile():
    section = _readme_docker_section()
    text = _dockerfile()
    assert f"`{_base_image()}`" in section, "README names another base image"
    assert "--gpus all" in section
    assert _volumes() == {v for v in _volumes() if f"`{v}`" in section}, "README omits a volume"
    for var in ("NO_ALBUMENTATIONS_UPDATE=1", "HDF5_USE_FILE_LOCKING=FALSE"):
        assert var in section and var in text
    uid = re.findall(r"^USER (\d+)", text, re.M)[-1]
    assert f"uid {uid}" in section


def test_readme_says_truly_whether_ci_runs_make_docker_test():
    assert re.search(r"^docker-test:", (ROOT / "Makefile").read_text(), re.M)
    section = _readme_docker_section()
    assert "make docker-test" in section
    in_ci = "docker-test" in (ROOT / ".ci" / "run").read_text()
    assert ("not run in CI" in section) != in_ci, "README and .ci/run disagree about docker-test"
