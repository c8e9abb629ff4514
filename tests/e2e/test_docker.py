"""The image: the Dockerfile builds a small multi-stage, non-root image with a health check whose one
entrypoint runs `serve` or `consume`.

What needs no engine always runs: the Dockerfile's shape, that .dockerignore keeps every package, and that
the wheel `pip install .` makes from that build context holds every module the service imports (built and
imported in isolation, so nothing is found in the work tree by accident).

The image tests run wherever a Docker-compatible engine answers: DOCKER_HOST, else Docker's socket or
podman's (`podman system service`, rootful /run/podman/podman.sock or rootless under XDG_RUNTIME_DIR).
Where none answers they skip, saying what was tried. They build the image, then check in it: uid 10001,
both roles start, the HEALTHCHECK is kept, no pip, setuptools or wheel anywhere (venv, base, ensurepip's
wheels), `convergence dev demo|stack` ends in one line and exit 2, and the health-check command of a
`consume` container fails, naming the pool, once its Pub/Sub connection is cut.

Measured on a 2-core machine through podman 4.3.1's socket (vfs storage, runc, a Debian bookworm stand-in
for python:3.11-slim, 247 MB): a build without cache 131 s (the wheels downloaded through a proxy);
image 356 MB, of which the venv is 109 MB (128 MB while it still held pip and setuptools); creating a
container about 20-30 s (vfs copies the image), starting one 0.3 s; the whole module with the build
303 s, the health test 32 s of it. Through podman 4.3's Docker API `docker run --rm` exits 0 whatever the
container did, and the image's Config.Healthcheck reads empty (a container's has it): the tests use
`docker exec` and container inspect for those."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO_ROOT

REPO = REPO_ROOT
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
    # the health check is a module of the installed package: nothing copied beside the venv
    assert "HEALTHCHECK" in final and '"-m", "convergence.healthcheck"]' in final
    assert "/health" in (REPO / "convergence" / "healthcheck.py").read_text()
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


def package_data_files() -> set[Path]:
    """The non-module files the wheel takes: each listed package's package-data patterns (those under "*" for
    every package), globbed in the folder it is installed from, `**` reaching into subfolders as in setuptools."""
    table = setuptools_table()
    patterns = table["package-data"]
    files: set[Path] = set()
    for package in table["packages"]:
        folder = source_dir(package)
        for pattern in [*patterns.get("*", []), *patterns.get(package, [])]:
            files.update(path for path in folder.glob(pattern) if path.is_file())
    return files


def test_every_data_file_of_a_package_is_package_data():
    """include-package-data is off: a data file that no package-data pattern names would be missing from the
    wheel and the image."""
    tracked = subprocess.run(["git", "ls-files", "-z", "--", *source_roots()], cwd=REPO, capture_output=True,
                             timeout=60)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    data = {REPO / name for name in tracked.stdout.decode().split("\0") if name and not name.endswith(".py")}
    assert any(path.suffix == ".yml" for path in data) and any(path.suffix == ".avsc" for path in data)
    missing = data - package_data_files()
    assert not missing, sorted(str(path.relative_to(REPO)) for path in missing)


@pytest.mark.slow
def test_wheel_from_the_build_context_imports_in_isolation(tmp_path):
    context = build_context(tmp_path)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=context, capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stderr[-2000:]
    # configs/ subfolders are data: setuptools must not take them for unlisted packages
    assert "Package would be ignored" not in build.stdout + build.stderr, (build.stdout + build.stderr)[-3000:]
    [wheel] = wheels.glob("convergence-*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
        names = archive.namelist()
    # one top-level package; the card's folders inside it, with their data
    assert {name.split("/")[0] for name in names if not name.startswith("convergence-")} == {"convergence"}
    assert "convergence/consumer/__init__.py" in names and "convergence/schemas/run_request.v1.json" in names
    assert "convergence/configs/openai/cost/usage_cost.yml" in names
    configs = context / "configs"
    assert {f"convergence/configs/{path.relative_to(configs)}" for path in configs.rglob("*") if path.is_file()} <= set(
        names)
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


def engine_sockets() -> list[str]:
    """Where a Docker-compatible engine may listen: DOCKER_HOST when set, else Docker's and podman's usual
    sockets (rootful, then rootless)."""
    if os.environ.get("DOCKER_HOST"):
        return [os.environ["DOCKER_HOST"]]
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    paths = ["/var/run/docker.sock", "/run/podman/podman.sock", f"{runtime}/podman/podman.sock",
             f"{runtime}/docker.sock"]
    return [f"unix://{path}" for path in dict.fromkeys(paths) if Path(path).exists()]


def find_engine() -> tuple[dict[str, str] | None, str]:
    """(the environment that reaches an engine, what answers) or (None, why none does)."""
    docker = shutil.which("docker")
    if docker is None:
        return None, "no docker CLI on this machine"
    sockets = engine_sockets()
    if not sockets:
        return None, ("no Docker-compatible engine: DOCKER_HOST is unset and none of /var/run/docker.sock, "
                      "/run/podman/podman.sock, $XDG_RUNTIME_DIR/podman/podman.sock exists")
    tried = []
    for host in sockets:
        env = {**os.environ, "DOCKER_HOST": host}
        try:
            info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                                  text=True, timeout=20, env=env)
        except subprocess.TimeoutExpired:
            tried.append(f"{host}: `docker info` did not answer within 20 s")
            continue
        if info.returncode == 0:
            return env, f"{host} (server {info.stdout.strip()})"
        tried.append(f"{host}: {(info.stderr.strip().splitlines() or ['no answer'])[-1][:160]}")
    return None, "no Docker-compatible engine answers `docker info`: " + "; ".join(tried)


@pytest.fixture(scope="module")
def engine() -> dict[str, str]:
    env, what = find_engine()
    if env is None:
        pytest.skip(f"image not built: {what}; the checks above ran without it")
    return env


@pytest.fixture(scope="module")
def docker(engine: dict[str, str]):
    def run(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=engine)
        if check:
            assert result.returncode == 0, f"docker {' '.join(args[:3])}: {result.stderr[-3000:]}"
        return result
    return run


@pytest.fixture(scope="module")
def image(docker) -> str:
    # Uncached, the build downloads every dependency (minutes); the tests using it carry their own timeout.
    docker("build", "-t", IMAGE, ".", timeout=BUILD_SECONDS, check=True)
    return IMAGE


BUILD_SECONDS = 1800
# Over pytest-timeout's project default (300 s): the first test builds the image.
image_timeout = pytest.mark.timeout(BUILD_SECONDS + 300)


@pytest.fixture(scope="module")
def box(docker, image):
    """One idle container of the image; the checks below run in it with `docker exec`. (Podman copies the
    image for each container on its vfs store, tens of seconds each; and through podman 4.3's Docker API,
    `docker run --rm` exits 0 whatever the command did, while `docker exec` passes the code on.)"""
    container = docker("run", "-d", "--entrypoint", "sleep", image, "infinity", check=True).stdout.strip()
    yield lambda *args, user="": docker("exec", *(["--user", user] if user else []), container, *args)
    docker("rm", "-f", container, timeout=60)


@pytest.mark.slow
@image_timeout
def test_image_builds_and_runs_both_roles(docker, image, box):
    assert box("id", "-u").stdout.strip() == "10001"
    for role in ("serve", "consume"):
        helped = box("convergence", role, "--help")
        assert helped.returncode == 0 and "Usage:" in helped.stdout, helped.stderr[-2000:]
    size = docker("image", "inspect", image, "--format", "{{.Size}}", check=True)
    assert int(size.stdout.strip()) < 600 * 1024 * 1024  # slim base, no toolchain, no dev extras
    # Podman's Docker API leaves the image's Config.Healthcheck empty; a container made from it has it.
    created = docker("create", image, check=True).stdout.strip()
    try:
        health = docker("container", "inspect", created, "--format", "{{json .Config.Healthcheck}}", check=True)
    finally:
        docker("rm", created)
    assert json.loads(health.stdout)["Test"][1:] == ["/opt/venv/bin/python", "-I", "-m", "convergence.healthcheck"]


NO_INSTALLER = r"""
import glob, subprocess
MODULES = "import importlib.util as u; print(*[m for m in ('pip', 'setuptools', 'pkg_resources', 'wheel') if u.find_spec(m)])"
found = []
for python in ("/opt/venv/bin/python", "/usr/local/bin/python3"):
    listed = subprocess.run([python, "-c", MODULES], capture_output=True, text=True, check=True).stdout
    found += [f"{python}: {name}" for name in listed.split()]
    if subprocess.run([python, "-m", "ensurepip"], capture_output=True).returncode == 0:
        found.append(f"{python} -m ensurepip installed pip")
for pattern in ("/usr/**/pip-*", "/usr/**/setuptools-*", "/opt/**/pip-*", "/opt/**/setuptools-*", "/usr/**/bin/pip*",
                "/opt/venv/bin/pip*"):
    found += glob.glob(pattern, recursive=True)
print("\n".join(found))
"""  # noqa: E501


@pytest.mark.slow
@image_timeout
def test_runtime_image_has_no_pip_or_setuptools(box):
    """Neither the venv nor the base's Python can install packages: no pip, setuptools or their wheels."""
    # As root: ensurepip could write anywhere, so only missing wheels can make it fail.
    result = box("/usr/local/bin/python3", "-c", NO_INSTALLER, user="0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout
    # The service itself still starts without them (nothing it imports needs pkg_resources).
    imported = box("python", "-c", "import convergence.consumer.service, convergence.consumer.serving, "
                   "convergence.api.door, convergence.cli")
    assert imported.returncode == 0, imported.stderr[-2000:]


@pytest.mark.slow
@image_timeout
def test_dev_says_the_local_stack_is_not_in_the_image(box):
    for command in (["dev", "demo"], ["dev", "stack"]):
        result = box("convergence", *command)
        assert result.returncode == 2, (command, result.stdout, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "not part of" in lines[0] and "Traceback" not in result.stderr, result.stderr
        assert result.stdout == ""


class CuttableProxy:
    """A TCP relay to `upstream` on a loopback port; cut() closes it and every connection through it, as
    when the network to Pub/Sub goes."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.listener.close()
        with self.lock:
            for end in self.sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def health_check(docker, container: str, command: list[str]) -> tuple[int, str]:
    result = docker("exec", container, *command, timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def until(check, want: int, seconds: float, container_log) -> str:
    """Run the health check until it exits `want` (the pool's probe runs every 15 s: nothing to await)."""
    deadline = time.monotonic() + seconds
    seen = []
    while time.monotonic() < deadline:
        code, output = check()
        seen.append((code, output))
        if code == want:
            return output
        time.sleep(1)
    raise AssertionError(f"health check never exited {want} in {seconds} s; last: {seen[-3:]}; "
                         f"container log: {container_log()[-3000:]}")


@pytest.mark.slow
@pytest.mark.emulator
@image_timeout
def test_health_check_fails_when_the_consumer_cannot_reach_pubsub(docker, image, local_stack, tmp_path):
    """consume in the image, on the emulators (Pub/Sub through a relay): healthy while it pulls; once the
    relay is cut, the image's own health-check command exits non-zero and names the pool."""
    from tests.harness import Platform, settings_env

    platform = Platform(local_stack, tmp_path)
    proxy = CuttableProxy(local_stack.pubsub.host)
    metrics_port = free_port()
    env = {name: value for name, value in settings_env(platform.settings).items()
           if name not in ("CONFIGS_DIR", "PROCESSOR_PACKAGES", "LOCAL_KEYRING_PATH")}
    env.update(PUBSUB_EMULATOR_HOST=f"127.0.0.1:{proxy.port}", METRICS_PORT=str(metrics_port),
               HTTP_HOST="127.0.0.1", LOCAL_KEYRING_PATH="/tmp/keyring.key")
    args = [f"--env={name}={value}" for name, value in env.items()]
    container = docker("run", "-d", "--network", "host", *args, image, "consume", check=True).stdout.strip()
    try:
        test = json.loads(docker("container", "inspect", container, "--format", "{{json .Config.Healthcheck}}",
                                 check=True).stdout)["Test"]
        assert test[0] == "CMD", test
        def check():
            return health_check(docker, container, test[1:])
        def logs():
            result = docker("logs", container)
            return result.stdout + result.stderr
        until(check, 0, 90, logs)  # pulling: healthy
        proxy.cut()
        output = until(check, 1, 90, logs)
        assert output.startswith("unhealthy: consume: pool ") and "Pub/Sub unreachable" in output, output
        assert "Traceback" not in output
        assert platform.settings.requests_subscription in output, output
    finally:
        docker("rm", "-f", container, timeout=60)
        proxy.cut()
        platform.close()
