"""The image: the Dockerfile builds a small multi-stage, non-root image with a health check whose one
entrypoint runs `serve` or `consume`.

Without a Docker engine (as on this project's machines) the real build is skipped, saying so; what can be
checked without one always runs: the Dockerfile's shape, that .dockerignore keeps every package, and that
the wheel `pip install .` makes from that build context holds every module the service imports (built and
imported in isolation, so nothing is found in the work tree by accident)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()
IMAGE = "convergence:test"


def setuptools_table() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def source_dir(package: str) -> Path:
    """The folder a listed package is installed from: its nearest package-dir mapping, then the rest."""
    mapping = setuptools_table()["package-dir"]
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in mapping:
            return REPO.joinpath(mapping[head], *parts[cut:])
    return REPO.joinpath(*parts)


def source_roots() -> list[str]:
    """The top-level folders the installed package is built from."""
    return sorted({source_dir(p).relative_to(REPO).parts[0] for p in setuptools_table()["packages"]})


def dockerignore() -> list[tuple[str, bool]]:
    """(pattern, negated) in order; later rules win, as Docker applies them."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line[1:], True) if line.startswith("!") else (line, False))
    return rules


def ignored(relative: str, rules: list[tuple[str, bool]]) -> bool:
    result = False
    for pattern, negated in rules:
        pattern = pattern.removeprefix("**/")
        if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(Path(relative).name, pattern):
            result = not negated
    return result


def build_context(target: Path) -> Path:
    """A copy of the sources `docker build .` sends (the .dockerignore rules applied per top-level entry).
    Only files, packages and configs/ are copied: scratch directories are never worth copying here (the
    test below checks that .dockerignore keeps them out of the real context)."""
    rules = dockerignore()
    context = target / "context"
    context.mkdir()
    for entry in REPO.iterdir():
        if ignored(entry.name, rules):
            continue
        if entry.is_dir() and not ((entry / "__init__.py").is_file() or entry.name == "configs"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, context / entry.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"), symlinks=True)
        else:
            shutil.copy2(entry, context / entry.name)
    return context


# ---- always ----------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_health_check():
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", DOCKERFILE, flags=re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2 and all(image.endswith("-slim") for image, _ in stages), stages
    final = DOCKERFILE[DOCKERFILE.rindex("FROM "):]
    assert "COPY --from=" in final  # the runtime stage takes the built venv, not the toolchain
    user = re.search(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert re.search(r"useradd .*--uid 10001", final)
    assert "HEALTHCHECK" in final and "/health" in final
    assert re.search(r'^ENTRYPOINT \["convergence"\]', final, flags=re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]', final, flags=re.MULTILINE)  # `consume` is the other role
    assert "[dev]" not in DOCKERFILE and "[local]" not in DOCKERFILE  # no test or emulator extras


def test_dockerignore_keeps_every_package_and_drops_the_rest():
    rules = dockerignore()
    for folder in source_roots():
        assert (REPO / folder).is_dir(), f"{folder} in pyproject but not in the tree"
        assert not ignored(folder, rules), f".dockerignore drops package source {folder}"
    for heavy in (".venv", ".git", ".state", ".tmp", "build", "dist", "convergence.egg-info", "tests", "bench",
                  "deploy"):
        assert ignored(heavy, rules), f"{heavy} would be sent to the Docker engine"
    # Whatever else git ignores at the top level (scratch, caches: the emulator's spill files reach tens
    # of GB) must not be in the build context either.
    listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    if listed.returncode == 0:
        def dropped(path: str) -> bool:  # the path or one of its folders is ignored
            parts = path.strip("/").split("/")
            return any(ignored("/".join(parts[:n]), rules) for n in range(1, len(parts) + 1))

        scratch = {line.strip() for line in listed.stdout.splitlines() if line.strip()}
        sent = sorted(path for path in scratch if not dropped(path) and (REPO / path).is_dir())
        assert not sent, f"git-ignored directories sent to the Docker engine: {sent}"
    assert not ignored("README.md", rules) and not ignored("pyproject.toml", rules)  # pip install . needs them
    assert not ignored("configs", rules)


def test_every_source_package_is_packaged():
    """A new package folder that pyproject does not list would be missing from the wheel and the image."""
    listed = {source_dir(p) for p in setuptools_table()["packages"]}
    found = {init.parent for root in source_roots() for init in (REPO / root).rglob("__init__.py")}
    assert found <= listed, sorted(str(p.relative_to(REPO)) for p in found - listed)
    assert all(path.is_dir() for path in listed), sorted(str(p) for p in listed if not p.is_dir())


@pytest.mark.slow
def test_wheel_from_the_build_context_imports_in_isolation(tmp_path):
    context = build_context(tmp_path)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=context, capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = wheels.glob("convergence-*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
        names = archive.namelist()
    # one top-level package; the card's folders inside it, with their data
    assert {name.split("/")[0] for name in names if not name.startswith("convergence-")} == {"convergence"}
    assert "convergence/consumer/__init__.py" in names and "convergence/schemas/run_request.v1.json" in names
    assert "convergence/configs/openai/cost/usage_cost.yml" in names
    site_packages = sysconfig.get_paths()["purelib"]
    modules = ["convergence.cli", "convergence.commands", "convergence.api", "convergence.api.door",
               "convergence.consumer.service", "convergence.consumer.serving", "convergence.consumer.ticks",
               "convergence.publisher.fanout", "convergence.publisher.follow", "convergence.publisher.ledger",
               "convergence.tenancy.eligibility", "convergence.runtime", "convergence.warehouse.runlog",
               "convergence.processors", "convergence.schemas"]
    # -S: no .pth files, so the work tree's editable install cannot supply a module the wheel lacks.
    code = (
        "import sys; sys.path[:0] = [sys.argv[1]]; sys.path.append(sys.argv[2]); import importlib\n"
        "for m in sys.argv[3:]:\n"
        "    mod = importlib.import_module(m)\n"
        "    assert mod.__file__.startswith(sys.argv[1]), (m, mod.__file__)\n"
        "from convergence.cli import _add_command_groups, cli\n"
        "_add_command_groups(); print(sorted(cli.commands))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run([sys.executable, "-S", "-c", code, str(installed), site_packages, *modules],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for command in ("consume", "serve", "publish", "schedule", "dlq"):
        assert f"'{command}'" in result.stdout


# ---- with a Docker engine ----------------------------------------------------------------------------------


def docker_engine() -> str | None:
    """Why the image cannot be built here, or None when it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on this machine"
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no engine"])[-1]
        return f"no Docker engine answers `docker info` ({reason[:160]})"
    return None


@pytest.mark.slow
def test_image_builds_and_runs_both_roles():
    reason = docker_engine()
    if reason is not None:
        pytest.skip(f"image not built: {reason}; the checks above ran without it")
    build = subprocess.run(["docker", "build", "-t", IMAGE, "."], cwd=REPO, capture_output=True, text=True,
                           timeout=1800)
    assert build.returncode == 0, build.stderr[-3000:]
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", IMAGE, "-u"], capture_output=True,
                          text=True, timeout=120)
    assert user.stdout.strip() == "10001"
    for role in ("serve", "consume"):
        helped = subprocess.run(["docker", "run", "--rm", IMAGE, role, "--help"], capture_output=True, text=True,
                                timeout=120)
        assert helped.returncode == 0 and "Usage:" in helped.stdout, helped.stderr[-2000:]
    inspect = subprocess.run(["docker", "image", "inspect", IMAGE, "--format", "{{.Size}}"], capture_output=True,
                             text=True, timeout=60)
    assert int(inspect.stdout.strip()) < 600 * 1024 * 1024  # slim base, no toolchain, no dev extras
