"""Docker images: MLflow server images per version, database images, and a base for hosts without a registry.

Every image is tagged by a hash of what went into it (its Dockerfile, the exact packages, its base image),
so a version is built once and a changed recipe builds anew. Server images contain exactly the packages the
harness's local env for the same spec runs on: what the env was built from (mlflow and its recipe) and
everything those require, at the versions the env has (`uv pip freeze`), as wheels fetched on the host and
installed in the build with no network (air-gapped CI works the same). The env's seed packages that nothing
requires (pip, wheel, setuptools from `uv venv --seed`) stay out: they need not agree with the rest (wheel
0.48 needs packaging>=24 beside mlflow 1.30.1's packaging<22), and the image's `pip install` checks that
the whole set does. With no registry at all, `bootstrap` makes a
Debian base with debootstrap + `docker import`, and database images from Debian's packages. The run's S3
server image (moto) is made the way server images are, from the object store's own local env. Which database
image a backend wants (its default, its bootstrap recipe) is the backend's (harness.backends); choosing
it for a run is harness.runtime.docker's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests
import urllib3
import uv
from filelock import FileLock
from jinja2 import Environment, PackageLoader, StrictUndefined
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from harness import owner
from harness.envs import Env
from harness.paths import cache_root

BASE = "mlflow-compat/debian:bookworm"
PYTHON = "mlflow-compat/python:3.11"  # Debian bookworm's python3 is 3.11
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
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise ImageError(f"building {tag} failed: the Docker engine went away ({exc})") from exc
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


def bootstrap_database(tag: str, template: str) -> str:
    """A database image from Debian's packages: ``template`` rendered on the bootstrapped base, tagged
    ``tag`` plus the recipe's digest (each backend names both: harness.backends)."""
    dockerfile = _render(template, base=bootstrap_base())
    return build(f"{tag}-{_digest(dockerfile)}", dockerfile)


# -- choosing what runs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    image: str
    note: str  # what the report says about why this image ran


def database_image(requested: str | None, default: str, bootstrap: Callable[[], str]) -> Choice:
    """The requested (or ``default`` official) image when it can be had; else ``bootstrap()``'s."""
    wanted = requested or default
    if available(wanted):
        return Choice(wanted, "requested" if requested else "default")
    if requested:
        raise ImageError(f"image {requested} is neither present nor pullable")
    return Choice(bootstrap(), f"{wanted} could not be found or pulled; bootstrapped from Debian")


def python_base(python_minor: str, requested: str | None) -> Choice:
    wanted = requested or f"python:{python_minor}-slim"
    if available(wanted):
        return Choice(wanted, "requested" if requested else "default")
    if requested:
        raise ImageError(f"image {requested} is neither present nor pullable")
    if python_minor != "3.11":
        raise ImageError(
            f"{wanted} could not be had, and the bootstrapped base only has Python 3.11 (with "
            "--resolution latest, MLflow's env runs on 3.11 where the version allows it)"
        )
    return Choice(bootstrap_python(), f"{wanted} could not be found or pulled; bootstrapped from Debian")


# Runs inside the env (any Python from 3.8, stdlib only): every installed distribution with its declared
# requirements, and the environment markers are evaluated against (as packaging.markers computes them).
_METADATA = r"""
import importlib.metadata as md, json, os, platform, sys
def full(info):
    version = "%d.%d.%d" % (info.major, info.minor, info.micro)
    return version if info.releaselevel == "final" else version + info.releaselevel[0] + str(info.serial)
dists = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name and name not in dists:
        dists[name] = dist.requires or []
impl = sys.implementation
markers = {"implementation_name": impl.name, "implementation_version": full(impl.version), "os_name": os.name,
           "platform_machine": platform.machine(), "platform_release": platform.release(),
           "platform_system": platform.system(), "platform_version": platform.version(),
           "python_full_version": platform.python_version(),
           "platform_python_implementation": platform.python_implementation(),
           "python_version": ".".join(platform.python_version_tuple()[:2]), "sys_platform": sys.platform}
print(json.dumps({"dists": dists, "markers": markers}))
"""


def _root(requirement: str) -> Requirement:
    """What the env was built from, as a requirement: `mlflow==1.30.1`, `setuptools<70`, or a wheel's path."""
    if requirement.endswith(".whl"):
        return Requirement(canonicalize_name(Path(requirement).name.split("-")[0]))
    return Requirement(requirement)


def needed(roots: list[str], dists: dict[str, list[str]], markers: dict[str, str]) -> set[str]:
    """The distributions (canonical names) that ``roots`` need: the roots and, transitively, every
    requirement whose marker holds here (with the extras asked for). ``dists`` maps each installed
    distribution to its declared requirements (Requires-Dist); requirements that are not installed are
    left for `pip install` to judge."""
    declared = {canonicalize_name(name): reqs for name, reqs in dists.items()}
    extras_of: dict[str, set[str]] = {}
    todo = [_root(r) for r in roots]
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), set(req.extras)
        known = extras_of.get(name)
        if known is not None and extras <= known:
            continue
        extras_of[name] = (known or set()) | extras
        for text in declared.get(name, []):
            try:
                dep = Requirement(text)
            except InvalidRequirement as exc:
                raise ImageError(
                    f"{name} declares a requirement that cannot be read: {text!r} ({exc})"
                ) from exc
            contexts = [{**markers, "extra": extra} for extra in ("", *sorted(extras_of[name]))]
            if dep.marker is None or any(dep.marker.evaluate(c) for c in contexts):
                todo.append(dep)
    return {name for name in extras_of if name in declared}


def _frozen(env: Env, wheels: Path) -> str:
    """The packages the env's MLflow runs on (see the module's docstring), pinned to the env's versions, as
    requirements; local wheels (candidate builds) are copied beside them."""
    return _frozen_at(env.interpreter, list(env.requirements), wheels, env.environ())


def _frozen_at(python: Path, roots: list[str], wheels: Path, environ: dict[str, str] | None) -> str:
    """What `_frozen` says, for the venv of ``python`` built from the requirements ``roots`` (``environ``: the
    probe's environment; None: this process's)."""
    proc = subprocess.run(
        [uv.find_uv_bin(), "pip", "freeze", "--python", str(python)],
        capture_output=True,
        text=True,
        check=True,
    )
    probe = subprocess.run([str(python), "-c", _METADATA], env=environ, capture_output=True,
                           text=True, check=False, timeout=120)  # fmt: skip
    if probe.returncode != 0:
        raise ImageError(f"reading the packages of {python} failed: {probe.stderr.strip()[-1000:]}")
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    keep = needed(roots, facts["dists"], facts["markers"])
    lines = []
    for line in proc.stdout.splitlines():
        name = line.partition(" @ ")[0].partition("==")[0].strip()
        if not name or canonicalize_name(name) not in keep:
            continue
        if " @ file://" in line:
            name, _, url = line.partition(" @ file://")
            src = Path(url)
            shutil.copy2(src, wheels / src.name)
            lines.append(f"{name} @ file:///tmp/wheels/{src.name}")
        else:
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
        _build_from_wheels(tag, dockerfile, env.interpreter, remote, wheels, f"MLflow {env.version}")
    return Choice(tag, base.note)


def objectstore_image(python: Path, requirement: str, version: str, base: Choice) -> Choice:
    """The run's S3 server image (moto ``version``): the packages ``requirement`` needs in the object store's
    local env (harness.objectstore; ``python`` is its interpreter), at that env's versions, installed from
    wheels fetched on the host, as server images are."""
    wheels = cache_root() / "wheels" / f"objectstore-{python.parent.parent.name}"
    with FileLock(str(wheels) + ".lock"):
        wheels.mkdir(parents=True, exist_ok=True)
        requirements = _frozen_at(python, [requirement], wheels, None)
        (wheels / "requirements.txt").write_text(requirements)
        dockerfile = _render("moto", base=base.image, version=version, python="python3")
        digest = _digest(dockerfile, requirements, client().images.get(base.image).id)
        tag = f"mlflow-compat/moto:{version}-{digest}"
        if have(tag):
            return Choice(tag, base.note)
        _build_from_wheels(tag, dockerfile, python, requirements.splitlines(), wheels, f"moto {version}")
    return Choice(tag, base.note)


def _build_from_wheels(
    tag: str, dockerfile: str, python: Path, requirements: list[str], wheels: Path, what: str
) -> None:
    """Fetch ``requirements``' wheels into ``wheels`` on this machine (with ``python``'s pip), then build
    ``tag`` from ``dockerfile`` in a context holding them: the build itself needs no network."""
    pip_wheel = [str(python), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels)]
    _run([*pip_wheel, *requirements], f"fetching wheels for {what}")
    context = owner.mkdtemp("mlflow-compat-ctx-")
    try:
        shutil.copytree(wheels, context / "wheels")
        build(tag, dockerfile, context)
    finally:
        shutil.rmtree(context, ignore_errors=True)
