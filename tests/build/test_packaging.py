"""The project's own files install and run what they claim (no Docker engine here:
the Dockerfile is checked by parsing it)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tomllib

import orjson
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_well_formed_and_copies_what_exists() -> None:
    ins = dockerfile_instructions()
    assert ins[0][0] == "FROM" and "python:3.11" in ins[0][1]
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "ENTRYPOINT", "CMD", "EXPOSE", "ARG", "LABEL"}
    assert {w for w, _ in ins} <= known
    for word, rest in ins:
        if word == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_dockerfile_runs_the_service_with_the_embedded_models() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    ins = dockerfile_instructions()
    entry = [rest for word, rest in ins if word == "ENTRYPOINT"]
    assert entry and entry[-1].strip('[]"') in scripts
    cmd = orjson.loads([rest for word, rest in ins if word == "CMD"][-1])
    assert cmd[0] == "serve" and "--host" in cmd
    # The CLI accepts exactly what the image runs.
    from voxline.cli import build_parser

    args = build_parser().parse_args(cmd)
    assert args.command == "serve"
    installs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "embedded" in installs and "resolve(" in installs
    exposed = [rest for word, rest in ins if word == "EXPOSE"]
    assert exposed and str(args.http_port) in exposed[0]


def test_console_script_and_module_entry_run() -> None:
    for cmd in ([sys.executable, "-m", "voxline", "--help"],):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "process" in res.stdout


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith(("#", "set", "cd"))]
    assert commands and all(c in readme for c in commands)
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
