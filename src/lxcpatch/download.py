"""Downloads over HTTP(S) into a staging folder, checked by sha256, and the cache they end up in.

A download is streamed to a temporary file while its sha256 is computed; it is only promoted to
`cache/<sha256>` once the whole fetch has succeeded, so a failed or interrupted fetch leaves
no cache entry behind. `cache/index.json` remembers which URL gave which sha256, so a second
fetch of the same URL needs no network even without --sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lxcpatch.errors import LxcpatchError, UsageError
from lxcpatch.sources import NO_NETWORK_HINT
from lxcpatch.workspace import atomic_write_json

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0  # seconds to open a connection
READ_TIMEOUT = 60.0  # seconds without a byte before giving up
RETRIES = 3
BACKOFF = 0.5  # seconds, doubled on each retry
CHUNK = 1 << 16
INDEX = "index.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class ProgressLog:
    """Logs download progress at every 10 % (or every few seconds when the size is unknown)."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.next_step = 10
        self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        if self.total:
            percent = self.done * 100 // self.total
            if percent >= self.next_step:
                log.info(
                    "%s: %d%% (%s of %s)",
                    self.what,
                    percent,
                    _size(self.done),
                    _size(self.total),
                )
                self.next_step = percent // 10 * 10 + 10
        elif time.monotonic() - self.last > 3:
            self.last = time.monotonic()
            log.info("%s: %s", self.what, _size(self.done))


def _session() -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        backoff_factor=BACKOFF,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "lxcpatch"
    return session


@dataclass
class Cache:
    """`cache/`: files named by their sha256, plus the URL → sha256 index.

    Files downloaded during one fetch wait in `staging` and move into the cache on `commit()`.
    """

    root: Path
    staging: Path
    offline: bool = False
    downloaded: list[str] = field(default_factory=list)
    _pending: dict[str, Path] = field(default_factory=dict)
    _urls: dict[str, str] = field(default_factory=dict)
    _folders: dict[Path, Path] = field(default_factory=dict)

    def _index(self) -> dict[str, str]:
        try:
            document = json.loads((self.root / INDEX).read_text())
            urls = document.get("urls", {})
        except (FileNotFoundError, ValueError, AttributeError):
            return {}
        return {str(k): str(v) for k, v in urls.items()} if isinstance(urls, dict) else {}

    def lookup(self, sha256: str) -> Path | None:
        """The cached (or already downloaded in this fetch) file with this sha256."""
        if sha256 in self._pending:
            return self._pending[sha256]
        path = self.root / sha256
        if path.is_file():
            if sha256_file(path) == sha256:
                return path
            log.warning("cache entry %s is damaged; it will be downloaded again", path)
        return None

    def get(
        self, url: str, *, sha256: str | None, size: int | None = None, what: str | None = None
    ) -> tuple[Path, str]:
        """The file at `url` (from the cache when it holds it), and its sha256.

        With `sha256`, a download that does not match is an error and nothing is kept.
        """
        what = what or url
        known = sha256 or self._index().get(url)
        if known is not None:
            cached = self.lookup(known)
            if cached is not None:
                log.info("%s: from the cache (sha256 %s)", what, known)
                self._urls[url] = known
                return cached, known
        if self.offline:
            raise UsageError(
                f"--offline: {url} is not in the cache {self.root}",
                hint="run the same fetch once without --offline to fill the cache",
            )
        path, digest = self._download(url, what)
        if size is not None and path.stat().st_size != size:
            got = path.stat().st_size
            path.unlink()
            raise LxcpatchError(
                f"size mismatch for {what}: expected {size} bytes, got {got}; "
                "the download was discarded",
                hint="the file on the server differs from the one the .dsc lists",
            )
        if sha256 is not None and digest != sha256:
            path.unlink()
            raise LxcpatchError(
                f"sha256 mismatch for {what}: expected {sha256}, got {digest}; "
                "the download was discarded",
                hint="check --sha256 and the URL; a changed or tampered file is never used",
            )
        self._pending[digest] = path
        self._urls[url] = digest
        return path, digest

    def _download(self, url: str, what: str) -> tuple[Path, str]:
        import requests

        self.staging.mkdir(parents=True, exist_ok=True)
        fd, name = _mkstemp(self.staging)
        tmp = Path(name)
        digest = hashlib.sha256()
        log.info("downloading %s", url)
        try:
            with os.fdopen(fd, "wb") as out, _session() as session:
                response = session.get(url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
                with response:
                    if response.status_code != 200:
                        raise LxcpatchError(
                            f"download of {url} failed: HTTP {response.status_code} "
                            f"{response.reason}",
                            hint="check the URL (or point --source at a local file)",
                        )
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    progress = ProgressLog(f"downloading {what}", total)
                    for chunk in response.iter_content(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        progress.advance(len(chunk))
                    if total is not None and progress.done != total:
                        raise LxcpatchError(
                            f"download of {url} was cut short: got {progress.done} of "
                            f"{total} bytes; it was discarded",
                            hint="try again; if it keeps failing, download it by hand and "
                            "pass the file to --source",
                        )
        except requests.exceptions.ChunkedEncodingError as exc:
            # urllib3 reports a body shorter than its Content-Length, or a dropped connection.
            tmp.unlink(missing_ok=True)
            raise LxcpatchError(
                f"download of {url} was cut short ({_reason(exc)}); it was discarded",
                hint="try again; if it keeps failing, download it by hand and pass the file "
                "to --source",
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            tmp.unlink(missing_ok=True)
            raise LxcpatchError(
                f"cannot reach {url}: {_reason(exc)}", hint=NO_NETWORK_HINT
            ) from exc
        except requests.exceptions.RequestException as exc:
            tmp.unlink(missing_ok=True)
            raise LxcpatchError(
                f"download of {url} failed: {_reason(exc)}; it was discarded",
                hint="try again, or download it by hand and pass the file to --source",
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.chmod(0o644)  # mkstemp made it private; a cache entry is an ordinary file
        self.downloaded.append(url)
        return tmp, digest.hexdigest()

    def keep_folder(self, folder: Path, target: Path) -> None:
        """On commit, `folder` (in staging) replaces the cache's folder `target`."""
        self._folders[folder] = target

    def commit(self) -> None:
        """Move this fetch's downloads into the cache and remember their URLs."""
        if not (self._pending or self._urls or self._folders):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for digest, path in self._pending.items():
            os.replace(path, self.root / digest)
        for folder, target in self._folders.items():
            if target.exists():
                os.rename(target, self.staging.parent / f"old-{target.name}")
            os.rename(folder, target)
        if self._urls:
            index = self._index()
            index.update(self._urls)
            atomic_write_json(self.root / INDEX, {"urls": index})

    def place(self, sha256: str, target: Path) -> None:
        """Put a copy of the file with `sha256` at `target` (a hard link when possible)."""
        source = self.lookup(sha256)
        if source is None:
            raise LxcpatchError(f"internal: {sha256} is neither cached nor downloaded")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)

    def adopt(self, path: Path) -> str:
        """Take a file some other program downloaded into staging; returns its sha256."""
        digest = sha256_file(path)
        self._pending.setdefault(digest, path)
        return digest


def _mkstemp(folder: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=".download-", suffix=".part", dir=folder)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    short = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", text)
    if short:
        return f"{short.group(1)} bytes arrived, {short.group(2)} more were expected"
    if "Connection broken" in text:
        return "the connection broke"
    for marker in ("Failed to establish a new connection:", "NameResolutionError", "Caused by"):
        if marker in text:
            return text[text.index(marker) :].rstrip(")'\"")[:300]
    return text[:300]
