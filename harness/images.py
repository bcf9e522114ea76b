"""Docker images: MLflow server images per version, database images, and a base for hosts without a registry.

Every image is tagged by a hash of what went into it (its Dockerfile, the exact packages, its base image),
so a version is built once and a changed recipe builds anew. Server images contain exactly the packages of
the harness's local env for the same spec (`uv pip freeze`), as wheels fetched on the host and installed in
the build with no network (air-gapped CI works the same). With no registry at all, `bootstrap` makes a
Debian base with debootstrap + `docker import`, and database images from Debian's packages.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import uv
from filelock import FileLock
from jinja2 import Environment, PackageLoader, StrictUndefined

from harness import owner
from harness.envs import Env
from harness.paths import cache_root

BASE = "mlflow-compat/debian:bookworm"
PYTHON = "mlflow-compat/python:3.11"  # Debian bookworm's python3 is 3.11
DB_IMAGES = {"postgres": "mlflow-compat/postgres:15", "mysql": "mlflow-compat/mariadb:10.11"}
DEFAULT_DB_IMAGES = {"postgres": "postgres:17", "mysql": "mysql:8.4"}
LABEL = "mlflow-compat"


class ImageError(RuntimeError):
    """An image could not be found, pulled or built: infrastructure."""


def client() -> docker.DockerClient:
    return docker.from_env(timeout=600)


def engine_available() -> bool:
    try:
        client().ping()
    except Exception:
        return False
    return True


def have(image: str) -> bool:
    try:
        client().images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def available(image: str) -> bool:
    """Present locally, or pulled now."""
    if have(image):
        return True
    try:
        client().images.pull(image)
    except docker.errors.APIError:
        return False
    return True


def _render(template: str, **values: str) -> str:
    env = Environment(
        loader=PackageLoader("harness", "templates/docker"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template(f"{template}.Dockerfile.j2").render(**values)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:12]


def build(tag: str, dockerfile: str, context: Path | None = None) -> str:
    """Build ``tag`` from ``dockerfile`` (and the files in ``context``) unless it exists; returns the tag."""
    with FileLock(str(cache_root() / f"image-{tag.replace('/', '_').replace(':', '_')}.lock")):
        if have(tag):
            return tag
        with tempfile.TemporaryDirectory(prefix="mlflow-compat-build-") as tmp:
            ctx = Path(tmp)
            owner.mark(ctx)
            if context is not None:
                shutil.copytree(context, ctx, dirs_exist_ok=True)
            (ctx / "Dockerfile").write_text(dockerfile)
            try:
                client().images.build(
                    path=str(ctx),
                    tag=tag,
                    network_mode="host",
                    rm=True,
                    forcerm=True,
                    labels={LABEL: "image"},
                )
            except (docker.errors.BuildError, docker.errors.APIError) as exc:
                log = "".join(str(c.get("stream", c.get("error", ""))) for c in getattr(exc, "build_log", []))
                raise ImageError(f"building {tag} failed: {exc}\n{log[-3000:]}") from exc
    return tag


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        raise ImageError(f"{what} failed: {(proc.stderr or proc.stdout)[-2000:]}")


# -- bootstrap (no registry) ------------------------------------------------------------------------
def bootstrap_base(suite: str = "bookworm") -> str:
    """A minimal Debian image made with debootstrap and `docker import`: needs no registry."""
    with FileLock(str(cache_root() / "image-base.lock")):
        if have(BASE):
            return BASE
        if shutil.which("debootstrap") is None:
            raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
        with tempfile.TemporaryDirectory(prefix="mlflow-compat-rootfs-") as tmp:
            owner.mark(Path(tmp))
            rootfs, archive = Path(tmp) / "rootfs", Path(tmp) / "rootfs.tar"
            _run(["debootstrap", "--variant=minbase", suite, str(rootfs)], "debootstrap")
            _run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], "packing the root filesystem")
            repository, tag = BASE.split(":")
            client().api.import_image_from_file(str(archive), repository=repository, tag=tag)
    return BASE


def bootstrap_python() -> str:
    dockerfile = _render("python", base=bootstrap_base(), python="3.11")
    return build(f"{PYTHON}-{_digest(dockerfile)}", dockerfile)


def bootstrap_database(backend: str) -> str:
    template = {"postgres": "postgres", "mysql": "mariadb"}[backend]
    dockerfile = _render(template, base=bootstrap_base())
    return build(f"{DB_IMAGES[backend]}-{_digest(dockerfile)}", dockerfile)


# -- choosing what runs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    image: str
    note: str  # what the report says about why this image ran


def database_image(backend: str, requested: str | None) -> Choice:
    """The requested (or default official) image when it can be had; else the bootstrapped one."""
    wanted = requested or DEFAULT_DB_IMAGES[backend]
    if available(wanted):
        return Choice(wanted, "requested" if requested else "default")
    if requested:
        raise ImageError(f"image {requested} is neither present nor pullable")
    return Choice(
        bootstrap_database(backend), f"{wanted} could not be found or pulled; bootstrapped from Debian"
    )


def python_base(python_minor: str, requested: str | None) -> Choice:
    wanted = requested or f"python:{python_minor}-slim"
    if available(wanted):
        return Choice(wanted, "requested" if requested else "default")
    if requested:
        raise ImageError(f"image {requested} is neither present nor pullable")
    if python_minor != "3.11":
        raise ImageError(f"{wanted} could not be had, and the bootstrapped base only has Python 3.11")
    return Choice(bootstrap_python(), f"{wanted} could not be found or pulled; bootstrapped from Debian")


def _frozen(env: Env, wheels: Path) -> str:
    """The env's exact packages as requirements; local wheels (candidate builds) are copied beside them."""
    proc = subprocess.run(
        [uv.find_uv_bin(), "pip", "freeze", "--python", str(env.interpreter)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = []
    for line in proc.stdout.splitlines():
        if " @ file://" in line:
            name, _, url = line.partition(" @ file://")
            src = Path(url)
            shutil.copy2(src, wheels / src.name)
            lines.append(f"{name} @ file:///tmp/wheels/{src.name}")
        elif line and not line.startswith("pip=="):  # the image's venv brings its own pip
            lines.append(line)
    return "\n".join(sorted(lines)) + "\n"


def server_image(env: Env, base: Choice) -> Choice:
    """The server image for ``env``'s MLflow, holding exactly the env's packages."""
    wheels = cache_root() / "wheels" / env.path.name
    with FileLock(str(wheels) + ".lock"):
        wheels.mkdir(parents=True, exist_ok=True)
        requirements = _frozen(env, wheels)
        (wheels / "requirements.txt").write_text(requirements)
        python = "python3"
        dockerfile = _render("server", base=base.image, version=str(env.version), python=python)
        base_id = client().images.get(base.image).id
        digest = _digest(dockerfile, requirements, base_id)
        tag = f"mlflow-compat/mlflow:{env.spec_label.replace('@', '-')}-{digest}"
        if have(tag):
            return Choice(tag, base.note)
        remote = [r for r in requirements.splitlines() if " @ file://" not in r]
        pip_wheel = [str(env.interpreter), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
        _run([*pip_wheel, *remote], f"fetching wheels for MLflow {env.version}")
        context = owner.mkdtemp("mlflow-compat-ctx-")
        try:
            shutil.copytree(wheels, context / "wheels")
            build(tag, dockerfile, context)
        finally:
            shutil.rmtree(context, ignore_errors=True)
    return Choice(tag, base.note)
