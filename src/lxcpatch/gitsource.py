"""Git through GitPython: shallow clones, and the pristine commit every fetched tree starts with."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, cast

from lxcpatch.errors import LxcpatchError
from lxcpatch.run import which
from lxcpatch.sources import NO_NETWORK_HINT, is_commit

# GitPython refuses to import without the git program: say which package provides it instead.
which("git")
import git  # noqa: E402

log = logging.getLogger(__name__)

BRANCH = "lxcpatch"  # the branch every fetched tree is left on, at the pristine commit
IDENTITY = ("lxcpatch", "lxcpatch@localhost")
TAGS_HINT = (
    "LXC's tags are lxc-X.Y.Z (0.6.5 to 5.0.3), vX.Y.Z (6.0.0 on) and lxc_0_X_Y (up to 0.6.4); "
    "--version X.Y.Z picks the right one; `git ls-remote --tags URL` lists them"
)
# Settings a person's git configuration might hold that would change what gets committed.
_NEUTRAL = [
    "commit.gpgsign=false",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.hooksPath=/dev/null",
]
_NETWORK_ERRORS = (
    "could not resolve host",
    "failed to connect",
    "unable to access",
    "connection refused",
    "connection timed out",
    "network is unreachable",
    "could not read from remote repository",
    "operation timed out",
)


class _Progress(git.RemoteProgress):
    """Logs the end of each clone stage, and the download in steps of 25 %."""

    NAMES: ClassVar[dict[int, str]] = {
        git.RemoteProgress.COUNTING: "counting objects",
        git.RemoteProgress.COMPRESSING: "compressing objects",
        git.RemoteProgress.RECEIVING: "receiving objects",
        git.RemoteProgress.RESOLVING: "resolving deltas",
        git.RemoteProgress.CHECKING_OUT: "checking out files",
    }

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.next_step = 25

    def update(
        self,
        op_code: int,
        cur_count: str | float,
        max_count: str | float | None = None,
        message: str = "",
    ) -> None:
        stage = op_code & self.OP_MASK
        what = self.NAMES.get(stage, "cloning")
        if op_code & self.END:
            log.info("clone %s: %s done %s", self.url, what, message.strip())
        elif stage == self.RECEIVING and max_count:
            percent = int(float(cur_count) * 100 / float(max_count))
            if percent >= self.next_step and percent < 100:
                log.info("clone %s: %s %d%% %s", self.url, what, percent, message.strip())
                self.next_step = percent // 25 * 25 + 25


def _clone_env() -> dict[str, str]:
    # Never wait for a password on a terminal; never let a credential helper pop up.
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LANG": "C", "LC_ALL": "C"}


def _failure(
    exc: git.GitCommandError, progress: _Progress, url: str, ref: str | None
) -> LxcpatchError:
    # With a progress handler, git's messages are in its lines rather than in the error.
    lines = [*progress.error_lines, *progress.other_lines, str(exc.stderr or "")]
    stderr = "\n".join(
        line.strip().strip("'").strip()
        for line in lines
        if line.strip() and not line.startswith("Cloning into")
    )
    lowered = stderr.lower()
    if ref is not None and ("remote branch" in lowered and "not found" in lowered):
        return LxcpatchError(f"{url} has no tag or branch {ref!r}", hint=TAGS_HINT)
    if ref is not None and (
        "couldn't find remote ref" in lowered
        or "not our ref" in lowered
        or "unadvertised" in lowered
    ):
        return LxcpatchError(
            f"{url} has no commit {ref}",
            hint="check the commit id, or give a tag with --ref; " + TAGS_HINT,
        )
    if "does not appear to be a git repository" in lowered or "repository not found" in lowered:
        return LxcpatchError(
            f"{url} is not a git repository", hint="check --source; " + NO_NETWORK_HINT
        )
    if any(marker in lowered for marker in _NETWORK_ERRORS):
        return LxcpatchError(f"cannot reach {url}: {stderr[-400:]}", hint=NO_NETWORK_HINT)
    return LxcpatchError(
        f"git could not clone {url}{f' at {ref}' if ref else ''}: {stderr[-600:]}",
        hint="check --source and --ref; " + NO_NETWORK_HINT,
    )


def clone(url: str, ref: str | None, dest: Path) -> str:
    """Shallow-clone `ref` (tag, branch or full commit id; None: the default branch) into `dest`.

    Returns the commit checked out, on branch `lxcpatch`.
    """
    progress = _Progress(url)
    log.info("cloning %s%s", url, f" at {ref}" if ref else "")
    try:
        if ref is not None and is_commit(ref):
            # A commit is no branch: fetch it alone (servers allow it with protocol v2).
            repo = git.Repo.init(dest)
            remote = repo.create_remote("origin", url)
            with repo.git.custom_environment(**_clone_env()):
                remote.fetch(ref, depth=1, progress=progress)
            repo.git.checkout("--quiet", "-B", BRANCH, "FETCH_HEAD")
        else:
            options: dict[str, Any] = {"depth": 1}
            if ref is not None:
                options["branch"] = ref
            repo = git.Repo.clone_from(
                url, dest, progress=cast(Any, progress), env=_clone_env(), **options
            )
            repo.git.checkout("--quiet", "-B", BRANCH)
    except git.GitCommandError as exc:
        raise _failure(exc, progress, url, ref) from exc
    _set_identity(repo)
    return str(repo.head.commit.hexsha)


def _set_identity(repo: git.Repo) -> None:
    # Later stages commit in the tree; they must not depend on a global git identity.
    with repo.config_writer() as config:
        config.set_value("user", "name", IDENTITY[0])
        config.set_value("user", "email", IDENTITY[1])


def make_pristine(tree: Path, message: str, when: int) -> str:
    """Make `tree` a git repository whose first commit holds it exactly; returns that commit."""
    repo = git.Repo.init(tree, initial_branch=BRANCH)
    info = Path(repo.git_dir) / "info"
    info.mkdir(exist_ok=True)
    # The pristine commit must store the bytes as they are: no end-of-line or filter conversion.
    (info / "attributes").write_text("* -text -filter -ident\n")
    _set_identity(repo)
    stamp = f"@{when} +0000"
    env = {
        "GIT_AUTHOR_NAME": IDENTITY[0],
        "GIT_AUTHOR_EMAIL": IDENTITY[1],
        "GIT_COMMITTER_NAME": IDENTITY[0],
        "GIT_COMMITTER_EMAIL": IDENTITY[1],
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_DATE": stamp,
    }
    options = {"c": _NEUTRAL}
    repo.git(**options).add("--all", "--force", ".")
    repo.git(**options).commit("--quiet", "--no-verify", "--allow-empty", "-m", message, env=env)
    return str(repo.head.commit.hexsha)


def source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else None
