"""Build one service's Lambda artifact.

`build/<service>/` holds `services/<service>/`, `shared/`, the contract schemas and the
project's runtime dependencies, installed for Lambda's platform at the versions
`requirements.lock` pins; `build/<service>.zip` is that tree as the deploy uploads it.
Our own code is copied into every artifact (no layers), so each service deploys on its own.

Run as `python -m infra.build SERVICE` (`make build-<service>`); it needs the package index,
not AWS.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from importlib.metadata import Distribution
from pathlib import Path

from infra.resources import CONSOLE, SERVICES

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
# Lambda's python3.11 runtime on x86_64 runs on Amazon Linux 2 (glibc 2.26): manylinux2014
# wheels, and only wheels, since nothing may be compiled on this machine for that one.
LAMBDA_PLATFORM = (
    "--platform",
    "manylinux2014_x86_64",
    "--implementation",
    "cp",
    "--python-version",
    "3.11",
    "--only-binary=:all:",
)
# The embedded stack's and the tests' packages: an artifact holding one was built wrong.
NOT_FOR_LAMBDA = frozenset({"moto", "pgserver", "pytest", "pytest-timeout", "ruff", "mypy"})
# A test's modules and the emulator's, by their import names.
NOT_FOR_LAMBDA_MODULES = frozenset({"moto", "pgserver", "pytest", "_pytest"})

# What can be built: each service, and the console.
DEPLOYABLES = (*SERVICES, CONSOLE)
# The pyproject extras a deployable needs beside the project's dependencies.
EXTRAS = {CONSOLE: ("console",)}

Installer = Callable[[Sequence[str], Path], None]


class BuildError(RuntimeError):
    pass


def canonical(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(lock: Path = LOCK) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        name, _, version = line.strip().partition("==")
        if version:
            pins[canonical(name)] = version
    return pins


def runtime_requirements(root: Path = ROOT, extras: Sequence[str] = ()) -> list[str]:
    """The project's dependencies (pyproject's [project] dependencies, and those of the
    `extras` named) at their pinned versions."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    declared = [
        *project["dependencies"],
        *(
            requirement
            for extra in extras
            for requirement in project["optional-dependencies"][extra]
        ),
    ]
    pins = pinned_versions(root / "requirements.lock")
    names = [
        canonical(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]) for requirement in declared
    ]
    unpinned = [name for name in names if name not in pins]
    if unpinned:
        raise BuildError(f"not pinned in requirements.lock: {', '.join(unpinned)}")
    return [f"{name}=={pins[name]}" for name in names]


def pip_install(requirements: Sequence[str], target: Path) -> None:
    """Install for Lambda with pip; the lock constrains every transitive dependency too."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",  # .pyc files would carry this machine's timestamps into the zip
        "--target",
        str(target),
        *LAMBDA_PLATFORM,
        "--constraint",
        str(LOCK),
        *requirements,
    ]
    subprocess.run(command, check=True)


def build(
    service: str,
    *,
    root: Path = ROOT,
    out_dir: Path | None = None,
    install: Installer = pip_install,
) -> Path:
    """Build `<out_dir>/<service>/` and `<out_dir>/<service>.zip` (a service, or the
    console); returns the zip."""
    if service not in DEPLOYABLES:
        raise BuildError(f"no service {service!r}; services are {', '.join(DEPLOYABLES)}")
    out_dir = out_dir or root / "build"
    tree = out_dir / service
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)

    install(runtime_requirements(root, EXTRAS.get(service, ())), tree)
    # Console scripts pip wrote for this machine's interpreter; Lambda never runs them.
    shutil.rmtree(tree / "bin", ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "shared", tree / "shared", ignore=skip)
    for package in own_packages(service):
        shutil.copytree(root / package, tree / package, ignore=skip)
    if service in SERVICES:
        shutil.copy2(root / "services" / "__init__.py", tree / "services" / "__init__.py")
    (tree / "contracts").mkdir()
    for schema in sorted((root / "contracts").glob("*.schema.json")):
        shutil.copy2(schema, tree / "contracts" / schema.name)

    problems = artifact_problems(tree, service, pinned_versions(root / "requirements.lock"))
    if problems:
        raise BuildError(f"{tree} is not deployable:\n  " + "\n  ".join(problems))
    return zip_tree(tree, out_dir / f"{service}.zip")


def own_packages(part: str) -> tuple[str, ...]:
    """The project's code a deployable's artifact holds beside shared/: a service's own
    package; the console's, with the operator command's modules and infra it runs."""
    if part == CONSOLE:
        return ("console", "ops", "infra")
    return (f"services/{part}",)


def handler_path(part: str) -> str:
    return "console/handler.py" if part == CONSOLE else f"services/{part}/handler.py"


def artifact_problems(tree: Path, service: str, pins: dict[str, str]) -> list[str]:
    """What makes a built tree unfit for Lambda; empty when it is fit."""
    package_init = () if service == CONSOLE else ("services/__init__.py",)
    problems = [
        f"missing {required}"
        for required in (handler_path(service), *package_init, "shared/__init__.py")
        if not (tree / required).is_file()
    ]
    if not list((tree / "contracts").glob("*.schema.json")):
        problems.append("missing contracts/*.schema.json")
    for metadata in sorted(tree.glob("*.dist-info")):
        distribution = Distribution.at(metadata)
        name, version = canonical(distribution.metadata["Name"]), distribution.version
        if name in NOT_FOR_LAMBDA:
            problems.append(f"{name} is for the local stack and tests, not Lambda")
        elif pins.get(name) != version:
            problems.append(
                f"{name} {version} is not what requirements.lock pins ({pins.get(name)})"
            )
    problems += [
        f"module {module} is for the local stack and tests, not Lambda"
        for module in sorted(NOT_FOR_LAMBDA_MODULES)
        if (tree / module).exists()
    ]
    return problems


def zip_tree(tree: Path, destination: Path) -> Path:
    """The tree as a zip whose bytes depend only on the files' paths and contents, so that
    an unchanged build uploads under the same content-addressed key."""
    destination.unlink(missing_ok=True)
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in tree.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(
                file.relative_to(tree).as_posix(), date_time=(1980, 1, 1, 0, 0, 0)
            )
            entry.external_attr = 0o644 << 16  # readable by Lambda's runtime user
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, file.read_bytes())
    return destination


def sha256(file: Path) -> str:
    with file.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m infra.build PART  ({' | '.join(DEPLOYABLES)})", file=sys.stderr)
        return 2
    try:
        archive = build(argv[0])
    except (BuildError, subprocess.CalledProcessError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    size_mb = archive.stat().st_size / 1e6
    digest = sha256(archive)[:12]
    print(f"built {archive.with_suffix('')}/ and {archive} ({size_mb:.1f} MB, sha256 {digest}…)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
