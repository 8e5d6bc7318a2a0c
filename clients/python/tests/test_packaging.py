"""The package installs from PyPI alone into a fresh venv; the code is lint- and type-clean."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
EXAMPLE = PACKAGE.parents[1] / "examples" / "frappe"


def interpreters() -> list[str]:
    """This Python, and the oldest the package supports (3.9) when the machine has one."""
    found = [sys.executable]
    candidates = [
        shutil.which("python3.9"),
        *glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")),
    ]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            found.append(candidate)
            break
    return found


@pytest.mark.parametrize("python", interpreters(), ids=lambda p: Path(p).name)
def test_pip_install_into_a_fresh_venv(python: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr
    check = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import ledger_client, pathlib, sys; "
            "assert (pathlib.Path(ledger_client.__file__).parent / 'py.typed').exists(); "
            "print(ledger_client.__version__, ledger_client.AsyncClient, sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the source tree: the installed package
    )
    assert check.returncode == 0, check.stderr
    assert "0.1.0" in check.stdout
    installed = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    # httpx and what httpx needs: nothing else.
    assert names - {"pip", "setuptools", "wheel"} <= {
        "ledger-client",
        "httpx",
        "httpcore",
        "anyio",
        "certifi",
        "h11",
        "idna",
        "sniffio",
        "exceptiongroup",
        "typing-extensions",
        "typing_extensions",
    }, names


def tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.skip(f"{name} is not in this environment (scripts/python-client installs it)")
    return str(path)


def test_ruff_finds_nothing() -> None:
    for args in (["check"], ["format", "--check"]):
        for where in (PACKAGE, EXAMPLE):
            out = subprocess.run(
                [tool("ruff"), *args, "."],  # each directory's own configuration
                capture_output=True,
                text=True,
                cwd=where,
            )
            assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_finds_nothing() -> None:
    out = subprocess.run([tool("mypy")], capture_output=True, text=True, cwd=PACKAGE)
    assert out.returncode == 0, out.stdout + out.stderr
