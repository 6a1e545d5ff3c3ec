"""The Dockerfile installs what setup.cfg declares, on the TensorFlow image setup.cfg pins."""

import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


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


def test_base_image_tensorflow_matches_the_pinned_range():
    tag = re.search(r"^FROM tensorflow/tensorflow:(\S+)-gpu\s*$", _dockerfile(), re.M)
    assert tag, "Dockerfile must start from the official tensorflow/tensorflow:<version>-gpu image"
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


def test_copies_every_package_setup_cfg_lists():
    packages = _setup_cfg()["options"]["packages"].replace(",", " ").split()
    text = _dockerfile()
    for pkg in packages:
        assert re.search(rf"^COPY {pkg} ", text, re.M), f"Dockerfile does not copy {pkg}/"


def test_runs_as_non_root_with_environment_and_volumes():
    text = _dockerfile()
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "NO_ALBUMENTATIONS_UPDATE=1" in text
    assert "HDF5_USE_FILE_LOCKING=FALSE" in text
    for volume in ("/data", "/shards", "/runs"):
        assert f'"{volume}"' in text


def test_console_scripts_are_the_commands_the_readme_uses():
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    names = {line.split("=")[0].strip() for line in scripts.strip().splitlines()}
    assert names == {"frozenaug-build", "frozenaug-train"}


def test_readme_docker_section_matches_the_dockerfile():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Docker on GPU servers", 1)[1].split("\n## ", 1)[0]
    text = _dockerfile()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert f"`{base}`" in section, "README names another base image"
    assert "docker build -t frozenaug ." in section and "--gpus all" in section
    volumes = set(re.findall(r'"(/\w+)"', re.search(r"^VOLUME \[(.*)\]", text, re.M).group(1)))
    mounted = set(re.findall(r":(/\w+)(?::ro)?\"? ", section))
    assert mounted and mounted <= volumes, f"README mounts {mounted - volumes}, not image volumes"
    assert volumes == {v for v in volumes if f"`{v}`" in section}, "README omits a volume"
    for var in ("NO_ALBUMENTATIONS_UPDATE=1", "HDF5_USE_FILE_LOCKING=FALSE"):
        assert var in section and var in text
    uid = re.findall(r"^USER (\d+)", text, re.M)[-1]
    assert f"uid {uid}" in section
