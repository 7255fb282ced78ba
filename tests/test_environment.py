"""The three descriptions of the environment name the same pinned packages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def requirements(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"{path.name}: '{line}' is not pinned with =="
            pins[match[1].lower()] = match[2]
    return pins


def conda_pip_section(path: Path) -> tuple[dict[str, str], list[str]]:
    """The pinned pip packages of an environment.yml, and its other pip lines."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pins, other = {}, []
    for line in lines[start + 1 :]:
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        if not item.startswith("- "):
            break
        item = item[2:].strip()
        match = PIN.match(item)
        if match:
            pins[match[1].lower()] = match[2]
        else:
            other.append(item)
    return pins, other


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_conda_files_pin_what_the_install_command_installs(env_file: str) -> None:
    pins, other = conda_pip_section(REPO / env_file)
    assert pins == requirements(REPO / "requirements.txt")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in other, (
        f"{env_file} must take torch from the CPU-only index"
    )


def test_requirements_pin_the_course_torch() -> None:
    assert requirements(REPO / "requirements.txt")["torch"] == "2.13.0"


def test_binder_uses_one_thread_and_installs_the_helpers() -> None:
    start = (REPO / "binder/start").read_text()
    assert "OMP_NUM_THREADS=1" in start and 'exec "$@"' in start
    assert "pip install --no-deps -e ." in (REPO / "binder/postBuild").read_text()
    assert not (REPO / "binder/requirements.txt").exists(), "ignored beside environment.yml"


def test_readme_badge_opens_week1_in_jupyterlab() -> None:
    readme = (REPO / "README.md").read_text()
    assert re.search(
        r"\(https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/HEAD"
        r"\?urlpath=lab/tree/release/week01_sgd/week01_sgd\.ipynb\)",
        readme,
    ), "the README's Binder badge must open JupyterLab at Week 1's release notebook"
    assert (REPO / "release/week01_sgd/week01_sgd.ipynb").is_file()


def test_the_postgres_extra_pins_what_the_tests_install() -> None:
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = dict(p.split("==") for p in extra["optional-dependencies"]["postgres"])
    dev = requirements(REPO / "requirements-dev.txt")
    assert pins and all(dev.get(name) == version for name, version in pins.items())
