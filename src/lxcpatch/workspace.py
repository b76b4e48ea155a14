"""The `build/` layout, owned by one object, and the atomic-write and locking helpers."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxcpatch.errors import BusyError, PrerequisiteError, UsageError

ENV_WORKDIR = "LXCPATCH_WORKDIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(name: str) -> str:
    """A tree name is one path component of safe characters."""
    if not _NAME.match(name) or name in {".", ".."}:
        raise UsageError(
            f"invalid tree name {name!r}",
            hint="use letters, digits, '.', '_', '+' and '-' only, e.g. --name lxc-2.0.11",
        )
    return name


@dataclass(frozen=True)
class Workspace:
    """Everything lxcpatch writes lives under `root` (default `./build`)."""

    root: Path

    @classmethod
    def resolve(cls, workdir: str | None = None) -> Workspace:
        """--workdir, else $LXCPATCH_WORKDIR, else ./build."""
        chosen = workdir or os.environ.get(ENV_WORKDIR) or "build"
        return cls(Path(chosen).expanduser().absolute())

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def tree(self, name: str) -> Path:
        return self.src / check_name(name)

    def manifest(self, name: str) -> Path:
        return self.src / f"{check_name(name)}.json"

    def patches(self, name: str) -> Path:
        return self.root / "patches" / check_name(name)

    def debs(self, name: str) -> Path:
        return self.root / "debs" / check_name(name)

    def work(self, name: str) -> Path:
        """The build folder of a tree: kept between builds (incremental rebuilds, fixed paths)."""
        return self.root / "work" / check_name(name)

    def log(self, name: str, step: str) -> Path:
        return self.logs / f"{check_name(name)}-{step}.log"

    def matrix(self, entry: str) -> Path:
        """The workspace of one `matrix --run` entry (a workspace of its own)."""
        return self.root / "matrix" / check_name(entry)

    @property
    def current_record(self) -> Path:
        return self.root / "current.json"

    def current_tree(self) -> str:
        """The name of the tree the last fetch produced."""
        try:
            name = json.loads(self.current_record.read_text())["tree"]
        except (FileNotFoundError, KeyError, ValueError) as exc:
            raise PrerequisiteError(
                f"no current tree in {self.root}",
                hint="run `lxcpatch fetch` first, or name a tree with --tree",
            ) from exc
        if not self.tree(name).is_dir():
            raise PrerequisiteError(
                f"the current tree {name} is gone from {self.src}",
                hint="run `lxcpatch fetch` again",
            )
        return str(name)

    def set_current(self, name: str) -> None:
        atomic_write_json(self.current_record, {"tree": check_name(name)})

    @contextlib.contextmanager
    def staging(self, prefix: str) -> Iterator[Path]:
        """A temporary folder on the workspace's filesystem (renames from it are atomic)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{prefix}-", dir=self.root))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Hold an exclusive lock named `what`; fail at once when another process holds it."""
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"{what}.lock"
        with path.open("a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise BusyError(
                    f"{what} is busy in {self.root}: {holder} holds {path}",
                    hint="wait for it to finish, or use another --workdir",
                ) from exc
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, document: Any) -> None:
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
