"""The shell commands the docs tell a person to type, read from the docs themselves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def fenced_sh(text: str) -> list[str]:
    """The body of each ```sh block of a Markdown text, as written."""
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def shell_blocks(doc: str) -> list[str]:
    """Each ```sh block of a doc, continued lines joined."""
    return [block.replace("\\\n", " ") for block in fenced_sh((DOCS / doc).read_text())]


def documented(doc: str, starts: str) -> list[str]:
    return [line for block in shell_blocks(doc) for line in block.splitlines() if line.startswith(starts)]


def run_shell(command: str, cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def documented_certificate(directory: Path) -> tuple[Path, Path]:
    """gateway.crt and gateway.key made by docs/security.md's own openssl command."""
    [command] = documented("security.md", "openssl req")
    run_shell(command, directory)
    return directory / "gateway.crt", directory / "gateway.key"
