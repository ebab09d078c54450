"""Where the repository and the test fixtures are, for tests at any depth."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
MAIL_FIXTURES = FIXTURES / "mail"
