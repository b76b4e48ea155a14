"""The tasks: each parses its options and makes one library call. Docstrings are the --help.

Heavy modules are imported inside each task so that `lxcpatch --list` starts fast.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from lxcpatch.cli import edge
from lxcpatch.report import Report
from lxcpatch.workspace import Workspace

COMMON_HELP = {
    "workdir": "output folder (default: ./build, or $LXCPATCH_WORKDIR)",
    "json": "print one JSON document on stdout (human output stays on stderr)",
}


@task(
    auto_shortflags=False,
    help={
        **COMMON_HELP,
        "source": "git URL or repository, tarball URL or path, .dsc URL or path, apt:PKG[=VER], "
        "or a directory (default: upstream lxc.git at lxc-2.0.11, pinned)",
        "ref": "git tag, branch or commit to check out",
        "sha256": "expected sha256 of the tarball (or .dsc); a mismatch keeps nothing",
        "name": "name of the tree under build/src/ (default: from the source and version)",
        "version": "upstream release X.Y.Z to fetch from the default source",
        "offline": "fail instead of downloading anything (serve from the cache only)",
        "force": "replace an existing tree of the same name",
    },
)
@edge
def fetch(
    c: Context,
    source: str | None = None,
    ref: str | None = None,
    sha256: str | None = None,
    name: str | None = None,
    version: str | None = None,
    offline: bool = False,
    force: bool = False,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Fetch an LXC source tree into build/src/NAME and make it the current tree."""
    from lxcpatch import fetch as fetching

    request = fetching.FetchRequest(
        source=source,
        ref=ref,
        sha256=sha256,
        name=name,
        version=version,
        offline=offline,
        force=force,
    )
    return fetching.fetch(Workspace.resolve(workdir), request)


@task(
    auto_shortflags=False,
    iterable=["tree"],
    help={
        **COMMON_HELP,
        "tree": "a tree folder or the name of a fetched tree; repeat for many "
        "(default: the current tree)",
        "series": "series file to apply (default: patches/series)",
        "check": "print the diffs and change nothing (exit 0 if everything would apply)",
        "revert": "undo every patch lxcpatch applied, restoring the pristine bytes",
        "status": "list the patches lxcpatch applied to each tree",
    },
)
@edge
def patch(
    c: Context,
    tree: list[str] | None = None,
    series: str | None = None,
    check: bool = False,
    revert: bool = False,
    status: bool = False,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Apply the patch series (@cap-sys-boot, …) to LXC trees; or check, revert, show status."""
    from pathlib import Path

    from lxcpatch import patch as patching

    request = patching.PatchRequest(
        trees=tuple(tree or ()),
        series=Path(series) if series else None,
        check=check,
        revert=revert,
        status=status,
    )
    return patching.run_patch(Workspace.resolve(workdir), request)


@task(
    auto_shortflags=False,
    iterable=["deb"],
    help={
        **COMMON_HELP,
        "root": "root filesystem to verify (default: /): its lxc-start and the liblxc it loads",
        "deb": "a .deb to verify without installing it (repeat for a set: lxc and liblxc1)",
        "lib": "a liblxc.so to verify",
        "binary": "an lxc-start to verify (its liblxc is looked up in --root)",
        "live": "also run lxc-start on a throwaway container without CAP_SYS_BOOT (needs root)",
        "timeout": "seconds the --live run may take before it is killed (default: 60)",
    },
)
@edge
def verify(
    c: Context,
    root: str | None = None,
    deb: list[str] | None = None,
    lib: str | None = None,
    binary: str | None = None,
    live: bool = False,
    timeout: float = 60.0,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Tell whether an lxc-start is patched, unpatched or does not need the patch."""
    from pathlib import Path

    from lxcpatch import verify as verifying

    request = verifying.VerifyRequest(
        root=Path(root) if root else None,
        debs=tuple(Path(d) for d in deb or ()),
        lib=Path(lib) if lib else None,
        binary=Path(binary) if binary else None,
        live=live,
        timeout=float(timeout),
    )
    return verifying.verify(request)


@task(
    auto_shortflags=False,
    iterable=["only", "var_lib"],
    help={
        **COMMON_HELP,
        "only": "run only this check (repeatable): capabilities, apparmor, storage, cgroups, "
        "bridge, lxc-start",
        "var_lib": "a folder the nested engine stores its containers in (repeatable; "
        "default: /var/lib/docker and /var/lib/lxc)",
    },
)
@edge
def doctor(
    c: Context,
    only: list[str] | None = None,
    var_lib: list[str] | None = None,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Check whether this container can run LXC or Docker inside it, with fixes."""
    from pathlib import Path

    from lxcpatch import doctor as doctoring

    request = doctoring.DoctorRequest(
        only=tuple(only or ()), var_lib=tuple(Path(v) for v in var_lib or ())
    )
    return doctoring.doctor(request)


@task(
    auto_shortflags=False,
    help={
        **COMMON_HELP,
        "file": "the matrix file (default: patches/matrix.toml of this lxcpatch checkout)",
        "run": "build every entry here, one after another, each in WORKDIR/matrix/ENTRY/, and "
        "print a table of outcomes (exit 1 if any failed; the others still run)",
    },
)
@edge
def matrix(
    c: Context,
    file: str | None = None,
    run: bool = False,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Print the build matrix (releases x images); --json gives CI its include: list."""
    from pathlib import Path

    from lxcpatch import matrix as building

    chosen = Path(file) if file else None
    return building.matrix_report(Workspace.resolve(workdir), chosen, build=run)


@task(
    auto_shortflags=False,
    help={
        **COMMON_HELP,
        "tree": "tree under build/src/ to build (default: the current tree)",
        "flavor": "auto (debian when the tree has debian/), upstream, or debian",
        "jobs": "parallel compile jobs (default, or 0: the number of processors)",
        "no_ccache": "do not compile through ccache (default: use it when it is installed)",
        "allow_unpatched": "build a tree that is not patched, as a control (version ~unpatchedN)",
        "configure_args": "more configure (or meson setup) arguments, one shell-quoted string; "
        "the default profile builds for /usr without docs, Python/Lua bindings, examples, "
        "tests, AppArmor, SELinux, seccomp, TLS, cgmanager, PAM and io_uring",
        "lint": "run lintian on the packages and print its findings",
        "build_number": "the N in VERSION+lxcpatchN (default, or 0: 1, one more when the "
        "patches changed since the last build)",
    },
)
@edge
def build(
    c: Context,
    tree: str | None = None,
    flavor: str = "auto",
    jobs: int = 0,
    no_ccache: bool = False,
    allow_unpatched: bool = False,
    configure_args: str | None = None,
    lint: bool = False,
    build_number: int = 0,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Build .deb packages from the patched tree into build/debs/TREE/."""
    from lxcpatch import debbuild

    request = debbuild.BuildRequest(
        tree=tree,
        flavor=debbuild.parse_flavor(flavor),
        jobs=jobs or None,
        ccache=not no_ccache,
        allow_unpatched=allow_unpatched,
        configure_args=debbuild.split_args(configure_args),
        lint=lint,
        build_number=build_number or None,
    )
    return debbuild.build(Workspace.resolve(workdir), request)


@task(
    auto_shortflags=False,
    help={
        **COMMON_HELP,
        "tree": "tree whose build dependencies to install (default: the current tree; "
        "before any fetch, those of the default upstream tree)",
        "flavor": "auto, upstream (lxcpatch's list) or debian (apt-get build-dep on debian/)",
        "dry_run": "print what would be installed, install nothing",
    },
)
@edge
def deps(
    c: Context,
    tree: str | None = None,
    flavor: str = "auto",
    dry_run: bool = False,
    workdir: str | None = None,
    json: bool = False,
) -> Report:
    """Install the build dependencies of the tree with apt-get."""
    from lxcpatch import debbuild
    from lxcpatch import deps as builddeps

    request = builddeps.DepsRequest(
        tree=tree, flavor=debbuild.parse_flavor(flavor), dry_run=dry_run
    )
    return builddeps.deps(Workspace.resolve(workdir), request)


ns = Collection(fetch, patch, build, deps, verify, doctor, matrix)
