"""The README's configuration table documents every environment variable the code reads."""

from __future__ import annotations

import dataclasses
import re

from messaging.runtime.config import RAY_SERVE_DEFAULTS, Config, WebSettings
from tests.paths import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()
DJANGO_VARS = [f.name.upper() for f in dataclasses.fields(WebSettings)]


def documented() -> set[str]:
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}


def test_every_config_variable_is_in_the_readme_table():
    names = {f.name.upper() for f in dataclasses.fields(Config)} | set(DJANGO_VARS)
    assert names - documented() == set()


def test_the_readme_documents_no_variable_that_does_not_exist():
    names = {f.name.upper() for f in dataclasses.fields(Config)} | set(DJANGO_VARS) | set(RAY_SERVE_DEFAULTS)
    assert documented() - names == set()


def test_quick_start_has_exactly_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == ["make run", "make test"]
