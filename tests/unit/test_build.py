"""infra.build: a service's artifact holds its handler, shared/, the contract schemas and the
pinned runtime dependencies, and nothing of the local stack or the tests."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra.build import (
    BuildError,
    Installer,
    artifact_problems,
    build,
    pinned_versions,
    runtime_requirements,
    sha256,
)

PINS = pinned_versions()


def fake_install(*extra: tuple[str, str]) -> Installer:
    """An installer that writes the metadata pip would, for the requested pins (+ extras)."""

    def install(requirements: Sequence[str], target: Path) -> None:
        pins = [requirement.partition("==")[::2] for requirement in requirements]
        for name, version in [*pins, *extra]:
            dist_info = target / f"{name.replace('-', '_')}-{version}.dist-info"
            dist_info.mkdir(parents=True)
            (dist_info / "METADATA").write_text(
                f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            )
        (target / "bin").mkdir()

    return install


def test_the_artifact_holds_the_handler_shared_code_schemas_and_pinned_dependencies(
    tmp_path: Path,
) -> None:
    archive = build("unlocking", out_dir=tmp_path, install=fake_install())

    tree = tmp_path / "unlocking"
    assert (tree / "services" / "unlocking" / "handler.py").is_file()
    assert (tree / "services" / "__init__.py").is_file()
    assert (tree / "shared" / "runtime" / "observability.py").is_file()
    assert (tree / "contracts" / "unlocking-request.v1.schema.json").is_file()
    # Only this service, only the schemas, no bytecode, no console scripts
    assert sorted(p.name for p in (tree / "services").iterdir()) == ["__init__.py", "unlocking"]
    assert not (tree / "contracts" / "examples").exists()
    assert not list(tree.rglob("__pycache__")) and not (tree / "bin").exists()
    assert (tree / f"boto3-{PINS['boto3']}.dist-info").is_dir()
    with zipfile.ZipFile(archive) as contents:
        assert "services/unlocking/handler.py" in contents.namelist()


def test_the_console_s_artifact_holds_its_handler_templates_the_operator_modules_and_extra(
    tmp_path: Path,
) -> None:
    build("console", out_dir=tmp_path, install=fake_install())

    tree = tmp_path / "console"
    assert (tree / "console" / "handler.py").is_file()
    assert (tree / "console" / "templates" / "run.html").is_file()
    assert (tree / "ops" / "approvals.py").is_file()
    assert (tree / "infra" / "statemachine" / "sourceflow.asl.json").is_file()
    assert not (tree / "services").exists() and not (tree / "local").exists()
    assert (tree / f"starlette-{PINS['starlette']}.dist-info").is_dir()
    assert (tree / f"mangum-{PINS['mangum']}.dist-info").is_dir()


def test_a_service_s_artifact_goes_without_the_console_s_web_stack() -> None:
    assert not {"starlette", "mangum", "uvicorn"} & {
        requirement.split("==")[0] for requirement in runtime_requirements()
    }


def test_the_same_tree_zips_to_the_same_bytes(tmp_path: Path) -> None:
    first = sha256(build("scheduler", out_dir=tmp_path / "a", install=fake_install()))
    second = sha256(build("scheduler", out_dir=tmp_path / "b", install=fake_install()))

    assert first == second


def test_runtime_requirements_are_the_project_dependencies_at_their_pins() -> None:
    requirements = dict(requirement.split("==") for requirement in runtime_requirements())

    assert requirements["aws-lambda-powertools"] == PINS["aws-lambda-powertools"]
    assert requirements["psycopg2-binary"] == PINS["psycopg2-binary"]
    # The local stack's and the tests' packages are extras, never runtime requirements
    assert not {"moto", "pgserver", "pytest", "cfn-lint"} & set(requirements)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (("moto", PINS["moto"]), "moto is for the local stack and tests"),
        (("pytest", PINS["pytest"]), "pytest is for the local stack and tests"),
        (("left-pad", "1.0"), "left-pad 1.0 is not what requirements.lock pins"),
    ],
)
def test_a_build_with_a_local_or_unpinned_package_fails(
    tmp_path: Path, extra: tuple[str, str], problem: str
) -> None:
    with pytest.raises(BuildError, match=problem):
        build("validation", out_dir=tmp_path, install=fake_install(extra))


def test_a_tree_without_its_handler_or_schemas_is_not_deployable(tmp_path: Path) -> None:
    (tmp_path / "contracts").mkdir()

    assert artifact_problems(tmp_path, "download", PINS) == [
        "missing services/download/handler.py",
        "missing services/__init__.py",
        "missing shared/__init__.py",
        "missing contracts/*.schema.json",
    ]


def test_an_unknown_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no service 'frontend'"):
        build("frontend", out_dir=tmp_path, install=fake_install())
