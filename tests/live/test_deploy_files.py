"""The service files in ``deploy/systemd`` run commands that exist, with flags that parse, given
the settings ``deploy/README.md`` shows: what the docs tell an operator to run, runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from kova_live.cli import main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _settings() -> dict[str, str]:
    """The ``KEY=value`` lines of deploy/README.md's example environment files."""
    found = re.findall(r"^\s+(KOVA_[A-Z_]+)=(.*?)(?:\s+#.*)?$", (DEPLOY / "README.md").read_text(), re.M)
    return dict(found)


def _commands(unit: Path) -> list[list[str]]:
    """Each ``ExecStart``/``ExecStartPre`` command line, its variables replaced as systemd does
    (``${X}`` as one word, ``$X`` split into words)."""
    text = unit.read_text().replace("\\\n", " ")
    settings = _settings()
    commands = []
    for line in re.findall(r"^ExecStart(?:Pre)?=(.*)$", text, re.M):
        words = []
        for word in shlex.split(line):
            if re.fullmatch(r"\$[A-Z_]+", word):
                words += shlex.split(settings[word[1:]])
            else:
                words.append(re.sub(r"\$\{([A-Z_]+)\}", lambda m: settings[m.group(1)], word))
        commands.append(words)
    return commands


@pytest.mark.parametrize("unit", sorted(DEPLOY.glob("systemd/*.service")), ids=lambda p: p.name)
def test_the_service_files_run_commands_whose_flags_parse(unit, monkeypatch):
    for key, value in _settings().items():  # the environment file
        monkeypatch.setenv(key, value)
    commands = _commands(unit)
    assert commands
    for words in commands:
        assert words[0] == "/opt/kova/.venv/bin/kova-live", words
        command = main.get_command(click.Context(main), words[1])
        assert command is not None, f"kova-live has no command {words[1]!r}"
        command.make_context(words[1], words[2:])  # raises on a flag that does not parse
