"""`@cap-drops`: every bounding-set drop under src/lxc/ but start.c's CAP_SYS_BOOT, in each era's
shape; the re-evaluation rule; partial patches; both recipes together, in either order."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lxcpatch.locate import Outcome, SiteState, scan
from lxcpatch.patch import PatchReport, PatchRequest, Status, applied, revert, run_patch
from lxcpatch.recipes import TOKENS, get
from lxcpatch.series import DEFAULT_SERIES, load, parse
from lxcpatch.verify import Status as VerifyStatus
from lxcpatch.verify import VerifyRequest, verify
from lxcpatch.workspace import Workspace
from tests.conftest import CliRunner
from tests.test_locate_properties import layouts, reformat
from tests.test_patch_support import DROPS, ERAS, commits, copy_tree, drop_files, git, snapshot

RECIPE = get("@cap-drops")
TOKEN = TOKENS["@cap-drops"]
SYS_BOOT_TOKEN = TOKENS["@cap-sys-boot"]
ERA_TREES = sorted(n for n in DROPS if n.startswith("lxc-"))


def _series(folder: Path, *entries: str) -> Path:
    series = folder / f"series-{'-'.join(e.lstrip('@') for e in entries)}"
    series.write_text("".join(f"{e}\n" for e in entries))
    return series


def _patch(workdir: Path, tree: Path, series: Path) -> PatchReport:
    report = run_patch(Workspace(workdir), PatchRequest(trees=(str(tree),), series=series))
    assert isinstance(report, PatchReport)
    return report


def _statuses(report: PatchReport) -> list[Status]:
    return [r.status for r in report.trees[0].results]


# --- locating ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DROPS))
def test_every_drop_is_rewritten_or_named_with_its_reason(name: str) -> None:
    tree, expected = ERAS / name, drop_files(name)
    seen = set()
    for file in RECIPE.targets(tree):
        found = RECIPE.locate((tree / file).read_bytes(), file)
        want = expected.get(file)
        if want is None:
            assert found.outcome is Outcome.NOT_NEEDED, (file, found.reason)
            continue
        seen.add(file)
        rewritten = [s.line for s in found.sites] if found.outcome is Outcome.FOUND else []
        left = found.skipped if found.outcome is Outcome.FOUND else found.sites
        assert rewritten == want.get("rewrite", []), file
        assert [s.line for s in left] == want.get("skip", []), file
        assert all(s.state is SiteState.UNRECOGNIZED for s in left)
        for site, why in zip(left, want.get("why", []), strict=True):
            assert isinstance(why, str) and why in site.reason, site.reason
    assert seen == set(expected)


def test_targets_are_every_c_file_under_src_lxc() -> None:
    assert RECIPE.targets(ERAS / "variant-drops-several") == [
        "src/lxc/attach.c",
        "src/lxc/conf.c",
        "src/lxc/tools/lxc_unshare.c",
    ]
    assert "src/lxc/start.c" in RECIPE.targets(ERAS / "lxc-2.0.11")


def test_the_cap_sys_boot_drop_of_the_start_code_is_left_to_its_recipe() -> None:
    start_c = (ERAS / "lxc-2.0.11/src/lxc/start.c").read_bytes()
    found = RECIPE.locate(start_c, "src/lxc/start.c")
    assert found.outcome is Outcome.NOT_NEEDED
    assert "1 other drop(s): CAP_SYS_BOOT at line 77" in found.reason
    # Anywhere else a drop of CAP_SYS_BOOT is one more drop (lxc.cap.drop = sys_boot).
    assert RECIPE.locate(start_c, "src/lxc/conf.c").outcome is Outcome.FOUND


def _drop(expression: str) -> bytes:
    return (
        "struct ops { int (*get)(int); };\n"
        "int f(struct ops *c, int *caps, int i)\n{\n"
        f"\tif (prctl(PR_CAPBSET_DROP, {expression}, 0, 0, 0)) {{\n"
        '\t\tSYSERROR("Failed to drop capability");\n\t\treturn -1;\n\t}\n\treturn 0;\n}\n'
    ).encode()


@pytest.mark.parametrize(
    "expression",
    [
        "cap",
        "c->cap",
        "caps[i]",
        "c->caps[i + 1].id",
        "prctl_arg(cap)",
        "prctl_arg(c->cap)",
        "(unsigned long)cap",
        "CAP_SYS_MODULE",
        "CAP_TO_INDEX(c->cap)",
        "prctl_arg(CAP_ID(c))",
    ],
)
def test_capability_expressions_that_are_safe_to_evaluate_again(expression: str) -> None:
    found = RECIPE.locate(_drop(expression), "src/lxc/conf.c")
    assert found.outcome is Outcome.FOUND, found.reason
    (site,) = found.sites
    assert (site.capability, site.reevaluable) == (expression, True)
    patched = RECIPE.render(found, _drop(expression))
    assert f"PR_CAPBSET_READ, {expression}, 0, 0, 0) == 0".encode() in patched
    logged = (
        f'capability %d is already absent from the bounding set; continuing", (int)({expression}));'
    )
    assert logged.encode() in patched


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("lookup(cap)", "calls the function lookup()"),
        ("prctl_arg(next(c))", "calls the function next()"),
        ("CAP_ID(pop(c))", "calls the function pop()"),
        ("c->get(i)", "calls through c->get"),
        ("caps[i++]", "changes a variable (i++)"),
        ("--i", "changes a variable (--i)"),
        ("(i = 3)", "assigns (i = 3)"),
        ("(i += 1)", "assigns (i += 1)"),
    ],
)
def test_capability_expressions_with_side_effects_are_named(expression: str, why: str) -> None:
    found = RECIPE.locate(_drop(expression), "src/lxc/conf.c")
    assert found.outcome is Outcome.UNRECOGNIZED
    assert f"capability expression {expression!r} at line 4 {why}: a side effect" in found.reason


# --- the rewrite ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DROPS))
def test_the_rewrite_keeps_errno_logs_the_number_and_relocates_as_patched(name: str) -> None:
    for file in drop_files(name):
        old = (ERAS / name / file).read_bytes()
        found = RECIPE.locate(old, file)
        if found.outcome is not Outcome.FOUND:
            continue
        new = RECIPE.render(found, old)
        count = len(found.sites)
        assert new.count(b"int lxcpatch_errno = errno;") == count
        assert new.count(b"errno = lxcpatch_errno;") == count
        assert len(re.findall(rb'INFO\("' + TOKEN.encode() + rb": capability %d ", new)) == count
        again = RECIPE.locate(new, file)
        assert again.outcome is Outcome.ALREADY_PATCHED, (name, file, again.reason)
        assert [s.capability for s in again.skipped] == [s.capability for s in found.skipped]
        # The READ fallback goes beside a DROP fallback of the file, once.
        has_drop_fallback = scan(old).drop_fallback_line is not None
        assert new.count(b"#define PR_CAPBSET_READ 23") == int(has_drop_fallback), file


def _compile(tree: Path, out: Path) -> None:
    """Every C file of the tree, with gcc -Wall -Werror, as issue 3's behaviour test builds."""
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p) for p in (tree / "src/lxc").rglob("*.c"))
    proc = subprocess.run(
        ["gcc", "-Wall", "-Werror", f"-I{tree / 'src'}", f"-I{tree / 'src/lxc'}", "-c", *sources],
        cwd=out,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"{tree.name}:\n{proc.stderr}"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("name", sorted(DROPS))
def test_every_fixture_compiles_before_and_after(name: str, tmp_path: Path) -> None:
    tree = copy_tree(name, tmp_path, as_git=False)
    _compile(tree, tmp_path / "before")
    series = _series(tmp_path, "@cap-drops")
    report = _patch(tmp_path / "build", tree, series)
    assert _statuses(report) == [Status.PATCHED], report.human()
    _compile(tree, tmp_path / "after")
    for file in drop_files(name):
        assert (TOKEN.encode() in (tree / file).read_bytes()) is bool(
            drop_files(name)[file].get("rewrite")
        )


# --- the two recipes together -------------------------------------------------------------


def test_both_recipes_in_either_order_give_the_same_tree(tmp_path: Path) -> None:
    orders = [("@cap-sys-boot", "@cap-drops"), ("@cap-drops", "@cap-sys-boot")]
    results = []
    for number, order in enumerate(orders):
        tree = copy_tree("lxc-2.0.11", tmp_path / f"order{number}")
        pristine = snapshot(tree)
        workdir = tmp_path / f"build{number}"
        first = _patch(workdir, tree, _series(tmp_path, *order))
        assert _statuses(first) == [Status.PATCHED, Status.PATCHED], first.human()
        assert first.trees[0].outcome == "complete"
        changed = {k for k, v in snapshot(tree).items() if pristine[k] != v}
        assert changed == {"src/lxc/start.c", "src/lxc/conf.c", "src/lxc/attach.c"}
        start_c = (tree / "src/lxc/start.c").read_bytes()
        assert SYS_BOOT_TOKEN.encode() in start_c and TOKEN.encode() not in start_c
        for file in ("src/lxc/conf.c", "src/lxc/attach.c"):
            assert TOKEN.encode() in (tree / file).read_bytes()
        assert [p.recipe for p in applied(tree)] == list(order)
        # Running again, in this order or the other, changes nothing.
        for series in (_series(tmp_path, *order), _series(tmp_path, *orders[1 - number])):
            again = _patch(workdir, tree, series)
            assert _statuses(again) == [Status.ALREADY_PATCHED] * 2, again.human()
        assert len(commits(tree)) == 3
        results.append({k: v for k, v in snapshot(tree).items()})
        revert([tree])
        assert snapshot(tree) == pristine
    assert results[0] == results[1]


def test_a_partial_patch_names_every_drop_it_leaves_alone(cli: CliRunner, tmp_path: Path) -> None:
    tree = copy_tree("variant-drops-side-effect", tmp_path)
    pristine = snapshot(tree)
    series = _series(tmp_path, "@cap-drops")

    proc = cli("patch", "--tree", tree, "--series", series, "--json")

    assert proc.returncode == 0, proc.stderr
    (document,) = json.loads(proc.stdout)["trees"]
    assert document["outcome"] == "partial"
    (result,) = document["results"]
    assert (result["status"], result["file"], result["line"]) == ("patched", "src/lxc/conf.c", 38)
    assert "4 drop(s) left alone: src/lxc/conf.c:50; src/lxc/conf.c:60" in result["reason"]
    skipped = result["skipped"]
    assert [(s["file"], s["line"]) for s in skipped] == [
        ("src/lxc/conf.c", line) for line in (50, 60, 72, 82)
    ]
    assert "changes a variable (i++)" in skipped[0]["reason"]
    text = " ".join(proc.stderr.split())
    assert "left alone: src/lxc/conf.c:60: the capability expression 'lookup_cap(name)'" in text
    assert "partial: the drops left alone above still fail without CAP_SETPCAP" in text
    patch = Path(result["patch"]).read_text()
    assert patch.count("+\t\tint lxcpatch_errno = errno;") == 1
    assert "--- a/src/lxc/conf.c" in patch

    again = json.loads(cli("patch", "--tree", tree, "--series", series, "--json").stdout)
    (again_result,) = again["trees"][0]["results"]
    assert again_result["status"] == "already-patched"
    # The same drops, where they are now (the rewrite above them made the file longer).
    assert [s["line"] for s in again_result["skipped"]] == [61, 71, 83, 93]
    assert again["trees"][0]["outcome"] == "partial"
    revert([tree])
    assert snapshot(tree) == pristine


def test_a_file_whose_only_drop_is_unrecognized_is_left_whole(tmp_path: Path) -> None:
    tree = copy_tree("variant-drops-several", tmp_path)
    pristine = snapshot(tree)

    report = _patch(tmp_path / "build", tree, _series(tmp_path, "@cap-drops"))

    (result,) = report.trees[0].results
    assert result.status is Status.PATCHED and report.exit_code == 0
    assert result.reason.startswith("4 drop(s) rewritten: src/lxc/conf.c (3), ")
    assert [(s.file, s.line) for s in result.skipped] == [("src/lxc/attach.c", 36)]
    changed = {k for k, v in snapshot(tree).items() if pristine[k] != v}
    assert changed == {"src/lxc/conf.c", "src/lxc/tools/lxc_unshare.c"}
    assert result.patch is not None
    text = result.patch.read_text()
    assert text.count("\n--- a/") == 2 and "tools/lxc_unshare.c" in text


def test_nothing_it_can_rewrite_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    tree = copy_tree("variant-drops-several", tmp_path, as_git=False)
    (tree / "src/lxc/conf.c").unlink()
    shutil.rmtree(tree / "src/lxc/tools")
    pristine = snapshot(tree)

    report = _patch(tmp_path / "build", tree, _series(tmp_path, "@cap-drops"))

    (result,) = report.trees[0].results
    assert result.status is Status.REFUSED and report.exit_code == 1
    assert result.reason.startswith("unrecognized: no drop it can rewrite, 1 it cannot")
    assert [(s.file, s.line) for s in result.skipped] == [("src/lxc/attach.c", 36)]
    assert report.trees[0].outcome == "failed"
    assert snapshot(tree) == pristine and applied(tree) == []


def test_a_release_without_other_drops_is_not_needed(tmp_path: Path) -> None:
    tree = copy_tree("lxc-0.5.0", tmp_path)
    report = _patch(tmp_path / "build", tree, _series(tmp_path, "@cap-sys-boot", "@cap-drops"))
    assert _statuses(report) == [Status.PATCHED, Status.NOT_NEEDED]
    reason = report.trees[0].results[1].reason
    assert reason.startswith("none of the 2 files it reads has a drop it rewrites")
    assert "CAP_SYS_BOOT at line" in reason
    assert git(tree, "log", "--format=%s").count("\n") == 2


def test_the_shipped_series_lists_cap_drops_commented_out() -> None:
    text = DEFAULT_SERIES.read_text()
    assert [e.spec for e in load().entries] == ["@cap-sys-boot"]
    assert re.search(r"^# @cap-drops$", text, re.M)
    assert "5.0 and 6.0" in text and "lxc.cap.drop" in text
    enabled = text.replace("# @cap-drops", "@cap-drops")
    assert [e.spec for e in parse(enabled, DEFAULT_SERIES.parent)] == [
        "@cap-sys-boot",
        "@cap-drops",
    ]


# --- verify on compiled libraries ---------------------------------------------------------


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_verify_reports_both_tokens_of_a_library_built_from_both_recipes(
    cli: CliRunner, tmp_path: Path
) -> None:
    libraries = {}
    for name, entries in (
        ("lxc-2.0.11", ("@cap-sys-boot", "@cap-drops")),
        ("lxc-4.0.12", ("@cap-sys-boot", "@cap-drops")),
        ("lxc-1.0.11", ("@cap-sys-boot",)),
    ):
        tree = copy_tree(name, tmp_path / "-".join(entries), as_git=False)
        report = _patch(tmp_path / "build", tree, _series(tmp_path, *entries))
        assert report.exit_code == 0, report.human()
        library = tmp_path / f"{name}-{len(entries)}" / "liblxc.so.1"
        library.parent.mkdir()
        sources = [str(tree / "src/lxc" / f) for f in ("start.c", "conf.c", "attach.c")]
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O1", f"-I{tree / 'src'}", f"-I{tree / 'src/lxc'}",
             *sources, "-Wl,-soname,liblxc.so.1", "-o", str(library)],
            check=True, capture_output=True,
        )  # fmt: skip
        libraries[name, len(entries)] = library

    proc = cli("verify", "--lib", libraries["lxc-2.0.11", 2], "--json")
    document = json.loads(proc.stdout)
    assert (proc.returncode, document["status"]) == (0, "patched")
    assert document["tokens"] == {"@cap-sys-boot": True, "@cap-drops": True}
    assert document["files"][0]["tokens"] == {"@cap-sys-boot": True, "@cap-drops": True}
    human = " ".join(cli("verify", "--lib", libraries["lxc-2.0.11", 2]).stderr.split())
    assert "tokens: @cap-sys-boot yes, @cap-drops yes" in human
    assert "patched (carries the token of @cap-sys-boot and @cap-drops)" in human

    # 4.0 does not drop CAP_SYS_BOOT: not-needed, and the @cap-drops token is reported.
    later = verify(VerifyRequest(lib=libraries["lxc-4.0.12", 2]))
    assert later.status is VerifyStatus.NOT_NEEDED
    assert later.tokens() == {"@cap-sys-boot": False, "@cap-drops": True}
    assert "no CAP_SYS_BOOT drop; carries the token of @cap-drops" in later.human()
    only = verify(VerifyRequest(lib=libraries["lxc-1.0.11", 1]))
    assert only.tokens() == {"@cap-sys-boot": True, "@cap-drops": False}


DROP_FILES = sorted((name, file) for name in DROPS for file in drop_files(name))


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(DROP_FILES), layout=layouts)
def test_layout_never_changes_what_is_rewritten(
    case: tuple[str, str], layout: dict[str, object]
) -> None:
    name, file = case
    old = (ERAS / name / file).read_bytes()
    text = reformat(old, **layout)  # type: ignore[arg-type]
    before, found = RECIPE.locate(old, file), RECIPE.locate(text, file)
    assert found.outcome == before.outcome, found.reason
    assert [s.line for s in found.sites] == [s.line for s in before.sites]
    assert [s.line for s in found.skipped] == [s.line for s in before.skipped]
    if found.outcome is Outcome.FOUND:
        patched = RECIPE.render(found, text)
        assert RECIPE.locate(patched, file).outcome is Outcome.ALREADY_PATCHED
        if b"\r\n" in text:
            assert patched.count(b"\n") == patched.count(b"\r\n")
