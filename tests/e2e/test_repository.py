"""The repository is self-contained: a clone alone builds and tests.

The AWS vectors live in tests/vectors/nitro; nothing in the project may read the team's shared
directory beside the checkout, where a fresh clone has nothing and tests used to skip or fail.
"""
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

VECTORS = ROOT / "tests" / "vectors" / "nitro"
# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + "shared" + r"|" + "shared" + r"/vectors|/work/" + "shared")
# Only the vectors' README may name where they were copied from, as provenance.
PROVENANCE = "tests/vectors/nitro/README.md"


def tracked_files():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("the repository's file list needs git and a .git (a worktree or clone)")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f]


def test_no_project_file_reads_outside_the_repository():
    offenders = []
    for name in tracked_files():
        if name == PROVENANCE:
            continue
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree but still in the index
        text = path.read_bytes().decode("utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{name}:{n}: {line.strip()}")
    assert not offenders, "files that read the shared directory:\n" + "\n".join(offenders)


def test_the_provenance_readme_is_the_only_exception_and_is_prose():
    text = (ROOT / PROVENANCE).read_text()
    # The README records the origin, and it is tracked, so a clone has it.
    assert "shared" in text and PROVENANCE in tracked_files()


def test_every_vector_the_readme_names_is_in_the_repository():
    readme = (VECTORS / "README.md").read_text()
    named = set(re.findall(r"\b(?:real|invalid|derived|bind-real)-[A-Za-z0-9-]+\.(?:cbor|der)\b",
                           readme))
    named.add("aws-nitro-root-g1.pem")
    assert len([n for n in named if re.fullmatch(r"real-\d+\.cbor", n)]) == 18
    tracked = set(tracked_files())
    missing = sorted(n for n in named if f"tests/vectors/nitro/{n}" not in tracked)
    assert not missing, f"vectors named by the README but not committed: {missing}"
    present = {p.name for p in VECTORS.iterdir()} - {"README.md"}
    assert present == named, f"unexplained files: {sorted(present - named)}"
