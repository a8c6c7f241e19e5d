"""The code version a run records: the commit of the git checkout the code came from."""

import shutil
import subprocess

import pytest

from mmexp.tracking.environment import git_state

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
# an identity for the commits, whatever the machine's git configuration says
IDENTITY = ["-c", "user.name=mmexp", "-c", "user.email=mmexp@example.com"]


def git(*args: str, cwd) -> str:
    done = subprocess.run(
        ["git", *IDENTITY, "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def outside_any_repository(tmp_path, monkeypatch):
    """``tmp_path``, where git looks for no repository above it."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_sha_branch_and_dirty_flag_of_a_repository(outside_any_repository):
    repo = outside_any_repository / "repo"
    (repo / "src").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    (repo / "src" / "a.py").write_text("one = 1\n")
    git("add", "src/a.py", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    git("checkout", "-q", "-b", "trial", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    assert git_state(repo) == {"sha": first, "dirty": False, "branch": "trial"}
    assert git_state(repo / "src") == git_state(repo)  # any folder of the checkout
    (repo / "notes.txt").write_text("untracked\n")
    assert git_state(repo)["dirty"] is False  # untracked files are not code that ran
    (repo / "src" / "a.py").write_text("one = 2\n")
    assert git_state(repo)["dirty"] is True
    git("commit", "-q", "-am", "second", cwd=repo)
    second = git_state(repo)
    assert second["sha"] == git("rev-parse", "HEAD", cwd=repo) != first
    assert second["dirty"] is False


def test_outside_a_repository_everything_is_none(outside_any_repository):
    plain = outside_any_repository / "plain"
    plain.mkdir()
    assert git_state(plain) == {"sha": None, "dirty": None, "branch": None}
