"""The documentation cites only files that are in the repository, and nothing points outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO_DIRS = ("docs/", "config/", "workflow/", "benchmarks/", "tests/", "profiles/", "src/", "envs/")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [name for name in out.stdout.splitlines() if (ROOT / name).is_file()]


def cited_paths(text: str) -> set[str]:
    """Backticked repository paths: under a repository folder or a file name with an extension, no
    placeholders (results/, logs/ and .venv/ are generated, not cited)."""
    paths = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split("::")[0].rstrip("/")  # a pytest node id cites its file
        if any(c in token for c in "<>{}*$") or token.startswith(("results", "logs", ".venv", "-")):
            continue
        if token.startswith(REPO_DIRS) or re.fullmatch(r"[\w.-]+\.(md|py|yaml|smk|rst|sh)", token):
            paths.add(token)
    return paths


@pytest.mark.parametrize("doc", ["README.md", "config/README.md", "docs/data_format.md", "docs/exact_theory.md",
                                 "docs/architecture.md"])
def test_documents_cite_existing_files(doc):
    missing = [path for path in sorted(cited_paths((ROOT / doc).read_text()))
               if not (ROOT / path).exists() and not (ROOT / doc).parent.joinpath(path).exists()]
    assert missing == [], f"{doc} cites files that are not in the repository"


def test_no_reference_to_files_outside_the_repository():
    pattern = re.compile(r"THEORY\.md|docs/THEORY\b|/work/shared|\.\./shared")
    offenders = [name for name in tracked_files() if name != "tests/test_references.py"
                 and pattern.search((ROOT / name).read_text(errors="replace"))]
    assert offenders == []
