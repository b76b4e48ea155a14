"""Fetch an LXC source tree (git, tarball, .dsc, apt:, directory) into the workspace.

Everything is written in a staging folder and renamed into place at the end: a failed or
interrupted fetch leaves no tree, no manifest and no cache entry behind. The tree becomes a git
repository whose first commit is the pristine source, on branch `lxcpatch`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxcpatch import debsource, gitsource
from lxcpatch.download import Cache, sha256_file
from lxcpatch.errors import LxcpatchError, PrerequisiteError, UsageError
from lxcpatch.lxctree import BuildSystem, inspect_tree
from lxcpatch.sources import (
    ENV_UPSTREAM,
    PINNED,
    UPSTREAM_REF,
    UPSTREAM_URL,
    Source,
    SourceKind,
    check_sha256,
    classify,
    is_commit,
    name_for_file,
    name_for_ref,
    safe_name,
    upstream_tag,
)
from lxcpatch.unpack import extract, newest_mtime, pax_commit
from lxcpatch.workspace import Workspace, check_name

log = logging.getLogger(__name__)

STAGING_PREFIX = "fetch"
MANIFEST_KEYS = (
    "name",
    "kind",
    "source",
    "ref",
    "commit",
    "pristine",
    "files",
    "version",
    "build_system",
    "debian",
    "time",
)
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+@-]*$")


@dataclass(frozen=True)
class FetchRequest:
    source: str | None = None
    ref: str | None = None
    sha256: str | None = None
    name: str | None = None
    version: str | None = None
    offline: bool = False
    force: bool = False


@dataclass(frozen=True)
class FetchManifest:
    """What was fetched (`build/src/<name>.json`); also the fetch task's report."""

    name: str
    kind: SourceKind
    source: str  # URL, absolute path, or apt:PKG[=VER]
    ref: str | None  # the git ref asked for
    commit: str | None  # the upstream commit (git; a `git archive` tarball's header), else None
    pristine: str  # the tree repository's first commit: the source as fetched
    files: dict[str, str]  # every downloaded or given file: name -> sha256
    version: str  # LXC's version, from configure.ac or meson.build
    build_system: BuildSystem
    debian: bool  # the tree has a debian/ folder
    time: str  # when it was fetched, ISO 8601 UTC
    tree: Path
    downloaded: tuple[str, ...] = field(default=(), compare=False)  # this run's downloads

    def document(self) -> dict[str, Any]:
        """The manifest file's content."""
        return {
            "name": self.name,
            "kind": str(self.kind),
            "source": self.source,
            "ref": self.ref,
            "commit": self.commit,
            "pristine": self.pristine,
            "files": dict(sorted(self.files.items())),
            "version": self.version,
            "build_system": str(self.build_system),
            "debian": self.debian,
            "time": self.time,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.document(), "tree": str(self.tree), "downloaded": list(self.downloaded)}

    def human(self) -> str:
        at = f" at {self.ref}" if self.ref else ""
        lines = [
            f"fetched {self.name}: LXC {self.version} ({self.build_system}) from {self.source}{at}",
            f"  tree      {self.tree}",
        ]
        if self.commit:
            lines.append(f"  commit    {self.commit}")
        lines.append(f"  pristine  {self.pristine} (branch {gitsource.BRANCH})")
        for name, digest in sorted(self.files.items()):
            lines.append(f"  sha256    {digest}  {name}")
        if self.files and self.kind in {SourceKind.TARBALL, SourceKind.DSC}:
            lines.append(
                f"  downloaded {len(self.downloaded)} file(s)"
                if self.downloaded
                else "  nothing downloaded (local files or the cache)"
            )
        return "\n".join(lines)

    @property
    def exit_code(self) -> int:
        return 0


def load_manifest(ws: Workspace, name: str) -> FetchManifest:
    """The manifest of the fetched tree `name`."""
    path = ws.manifest(name)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PrerequisiteError(
            f"no fetched tree {name!r}: {path} does not exist",
            hint="run `lxcpatch fetch` first (or --name the tree you fetched)",
        ) from exc
    except (OSError, ValueError) as exc:
        raise LxcpatchError(
            f"cannot read the manifest {path}: {exc}", hint="fetch the tree again with --force"
        ) from exc
    try:
        missing = [key for key in MANIFEST_KEYS if key not in document]
        if missing:
            raise KeyError(", ".join(missing))
        return FetchManifest(
            name=str(document["name"]),
            kind=SourceKind(document["kind"]),
            source=str(document["source"]),
            ref=document["ref"],
            commit=document["commit"],
            pristine=str(document["pristine"]),
            files={str(k): str(v) for k, v in dict(document["files"]).items()},
            version=str(document["version"]),
            build_system=BuildSystem(document["build_system"]),
            debian=bool(document["debian"]),
            time=str(document["time"]),
            tree=ws.tree(name),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LxcpatchError(
            f"the manifest {path} is damaged ({type(exc).__name__}: {exc})",
            hint="fetch the tree again with --force",
        ) from exc


@dataclass(frozen=True)
class _Plan:
    source: Source
    ref: str | None
    sha256: str | None
    pin: str | None  # the commit the checkout must be
    default: bool  # no --source: upstream (or $LXCPATCH_UPSTREAM)


@dataclass(frozen=True)
class _Fetched:
    tree: Path  # in staging
    files: dict[str, str]
    commit: str | None
    pristine: str | None  # set when the source already came as a git repository
    name: str | None  # a name the source suggests


def _check_ref(ref: str) -> str:
    if not _REF.match(ref) or ".." in ref or ref.endswith((".", "/", ".lock")):
        raise UsageError(
            f"--ref {ref!r} is not a valid git tag, branch or commit",
            hint="e.g. --ref lxc-2.0.11, --ref stable-2.0 or a full 40-digit commit id",
        )
    return ref


def plan(request: FetchRequest, *, cwd: Path | None = None) -> _Plan:
    """Check the options against each other and recognise the source (no I/O beyond stat)."""
    default = request.source is None
    text = (os.environ.get(ENV_UPSTREAM) or UPSTREAM_URL) if default else str(request.source)
    source = classify(text, cwd=cwd)
    kind = "apt: source package" if source.apt else f"{source.kind} source"
    if default and source.kind is not SourceKind.GIT:
        raise UsageError(
            f"{ENV_UPSTREAM}={text} is not a git repository",
            hint=f"point {ENV_UPSTREAM} at a git mirror of {UPSTREAM_URL}, or use --source",
        )
    ref = request.ref
    if request.version is not None:
        if ref is not None:
            raise UsageError(
                "--version and --ref both choose what to check out",
                hint="give one: --version 2.0.11 or --ref lxc-2.0.11",
            )
        if source.kind is not SourceKind.GIT:
            raise UsageError(
                f"--version picks an upstream git tag, but {text} is a {kind}",
                hint="drop --version (the tree's version is read from its files), or fetch "
                "from upstream git or a mirror",
            )
        ref = upstream_tag(request.version)
    if ref is not None and source.kind is not SourceKind.GIT:
        raise UsageError(
            f"--ref applies to git sources, but {text} is a {kind}",
            hint="drop --ref, or give a git repository as --source",
        )
    if default and ref is None:
        ref = UPSTREAM_REF
    if ref is not None:
        _check_ref(ref)
    sha256 = None
    if request.sha256 is not None:
        sha256 = check_sha256(request.sha256)
        if source.kind not in {SourceKind.TARBALL, SourceKind.DSC} or source.apt:
            raise UsageError(
                f"--sha256 checks a tarball or .dsc file, but {text} is a {kind}",
                hint="drop --sha256 (git sources are checked by commit: use --ref COMMIT)",
            )
    pin = PINNED.get(ref) if default and ref is not None else None
    if ref is not None and is_commit(ref):
        pin = ref
    return _Plan(source, ref, sha256, pin, default)


def _early_name(request: FetchRequest, p: _Plan) -> str | None:
    if request.name is not None:
        return check_name(request.name)
    source = p.source
    if source.kind is SourceKind.GIT:
        return name_for_ref(p.ref) if p.ref else None
    if source.kind is SourceKind.DIRECTORY:
        return safe_name(source.filename)
    if source.apt:
        return None
    return name_for_file(source.filename)


def _refuse_existing(ws: Workspace, name: str, force: bool) -> None:
    tree, manifest = ws.tree(name), ws.manifest(name)
    if not force and (tree.exists() or tree.is_symlink() or manifest.exists()):
        raise LxcpatchError(
            f"a tree named {name} already exists in {ws.src}",
            hint="add --force to replace it, or --name another name",
        )


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that staging gets cleaned up on `kill`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sweep(ws: Workspace) -> None:
    # Staging left by a fetch that was killed outright (SIGKILL, power loss); we hold the lock.
    for stale in ws.root.glob(f".tmp-{STAGING_PREFIX}-*"):
        log.info("removing %s, left by an interrupted fetch", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _fetch_git(p: _Plan, staging: Path, offline: bool) -> _Fetched:
    url = p.source.url
    assert url is not None
    if offline and not url.startswith("file://"):
        raise UsageError(
            f"--offline: cloning {url} needs the network",
            hint="point --source at a local clone or mirror, or drop --offline",
        )
    if p.source.path is not None:
        _warn_if_dirty(p.source.path)
    tree = staging / "tree"
    commit = gitsource.clone(url, p.ref, tree)
    if p.pin is not None and commit != p.pin:
        raise LxcpatchError(
            f"{p.source.text} at {p.ref} is commit {commit}, not the pinned {p.pin}; "
            "nothing was kept",
            hint="the tag was moved or the repository is not upstream LXC: check the source, "
            "or give it explicitly with --source to fetch it unpinned",
        )
    return _Fetched(tree, {}, commit, commit, None)


def _warn_if_dirty(path: Path) -> None:
    import git

    with contextlib.suppress(git.InvalidGitRepositoryError, git.GitCommandError):
        repo = git.Repo(path)
        if not repo.bare and repo.is_dirty():
            log.warning("%s has uncommitted changes; only committed work is fetched", path)


def _fetch_tarball(p: _Plan, staging: Path, cache: Cache) -> _Fetched:
    source = p.source
    if source.url is not None:
        path, digest = cache.get(source.url, sha256=p.sha256, what=source.filename)
    else:
        assert source.path is not None
        path, digest = source.path, sha256_file(source.path)
        if p.sha256 is not None and digest != p.sha256:
            raise LxcpatchError(
                f"sha256 mismatch for {source.filename}: expected {p.sha256}, got {digest}; "
                "nothing was kept",
                hint="check --sha256 and the file",
            )
    unpacked = extract(path, staging / "unpack", what=source.filename)
    tree = staging / "tree"
    os.rename(unpacked, tree)
    return _Fetched(tree, {source.filename: digest}, pax_commit(path), None, None)


def _fetch_dsc(ws: Workspace, p: _Plan, staging: Path, cache: Cache) -> _Fetched:
    source = p.source
    if source.apt is not None:
        dsc = debsource.apt_source(ws, source.apt, cache, staging)
        source = Source(SourceKind.DSC, source.text, path=dsc)
    dsc_copy, files = debsource.gather(source, cache, p.sha256, staging / "dsc")
    tree = staging / "tree"
    debsource.unpack(dsc_copy, tree)
    return _Fetched(tree, files, None, None, name_for_file(dsc_copy.name))


def _fetch_directory(ws: Workspace, p: _Plan, staging: Path) -> _Fetched:
    path = p.source.path
    assert path is not None
    if ws.root.resolve().is_relative_to(path.resolve()):
        raise UsageError(
            f"the workspace {ws.root} lies inside the source directory {path}",
            hint="use a --workdir outside the directory you fetch",
        )
    tree = staging / "tree"
    try:
        shutil.copytree(path, tree, symlinks=True)
    except (shutil.Error, OSError) as exc:
        raise LxcpatchError(
            f"cannot copy {path}: {exc}",
            hint="the directory must be readable and hold only files, folders and links",
        ) from exc
    return _Fetched(tree, {}, None, None, None)


def _pristine_time(tree: Path) -> int:
    """A fixed date for the pristine commit: SOURCE_DATE_EPOCH, debian/changelog, newest file."""
    epoch = gitsource.source_date_epoch()
    if epoch is not None:
        return epoch
    changelog = tree / "debian" / "changelog"
    if changelog.is_file():
        from debian.changelog import Changelog

        with contextlib.suppress(Exception):
            date = Changelog(changelog.read_text(errors="replace"), max_blocks=1).date
            if date:
                return int(email.utils.parsedate_to_datetime(date).timestamp())
    return max(newest_mtime(tree), 1)


def _install(
    ws: Workspace, staging: Path, manifest: FetchManifest, tree: Path, force: bool
) -> None:
    """Rename the staged tree and manifest into place (moving an old one aside with --force)."""
    _refuse_existing(ws, manifest.name, force)
    target, document = ws.tree(manifest.name), ws.manifest(manifest.name)
    staged_manifest = staging / "manifest.json"
    staged_manifest.write_text(json.dumps(manifest.document(), indent=2, sort_keys=True) + "\n")
    ws.src.mkdir(parents=True, exist_ok=True)
    old = staging / "replaced"
    old.mkdir()
    if target.exists() or target.is_symlink():
        log.info("replacing %s (--force)", target)
        os.rename(target, old / "tree")
    if document.exists():
        os.rename(document, old / "manifest.json")
    os.rename(tree, target)
    os.rename(staged_manifest, document)


def fetch(ws: Workspace, request: FetchRequest) -> FetchManifest:
    """Fetch the source the request names into build/src/NAME and make it the current tree."""
    p = plan(request)
    with ws.lock("fetch"), _terminate_as_interrupt():
        _sweep(ws)
        early = _early_name(request, p)
        if early is not None:
            _refuse_existing(ws, early, request.force)
        with ws.staging(STAGING_PREFIX) as staging:
            cache = Cache(ws.cache, staging / "downloads", offline=request.offline)
            kind = p.source.kind
            if kind is SourceKind.GIT:
                fetched = _fetch_git(p, staging, request.offline)
            elif kind is SourceKind.TARBALL:
                fetched = _fetch_tarball(p, staging, cache)
            elif kind is SourceKind.DSC:
                fetched = _fetch_dsc(ws, p, staging, cache)
            else:
                fetched = _fetch_directory(ws, p, staging)
            what = p.source.text + (f" at {p.ref}" if p.ref else "")
            info = inspect_tree(fetched.tree, what=what)
            name = early or fetched.name or check_name(f"lxc-{info.version}")
            pristine = fetched.pristine or gitsource.make_pristine(
                fetched.tree,
                f"Pristine LXC {info.version} ({kind})\n\nFetched by lxcpatch from {what}\n",
                _pristine_time(fetched.tree),
            )
            manifest = FetchManifest(
                name=name,
                kind=kind,
                source=_recorded_source(p.source),
                ref=p.ref,
                commit=fetched.commit,
                pristine=pristine,
                files=fetched.files,
                version=info.version,
                build_system=info.build_system,
                debian=info.debian,
                time=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                tree=ws.tree(name),
                downloaded=tuple(cache.downloaded),
            )
            _install(ws, staging, manifest, fetched.tree, request.force)
            cache.commit()
        ws.set_current(name)
    log.info("fetched %s into %s", name, manifest.tree)
    return manifest


def _recorded_source(source: Source) -> str:
    if source.apt is not None:
        return source.text
    if source.url is not None and not source.url.startswith("file://"):
        return source.url
    return str(source.path) if source.path is not None else source.text
