"""Locating bounding-set drops by their syntax: every era, every variant, decoys, refusals."""

from __future__ import annotations

import pytest

from lxcpatch.locate import Form, Outcome, SiteState, find_sites, scan
from lxcpatch.recipes import get
from tests.test_patch_support import EXPECTED, fixtures, source


@pytest.mark.parametrize("name", fixtures())
def test_every_fixture_locates_as_expected(name: str) -> None:
    result = find_sites(source(name))
    assert result.outcome == EXPECTED[name]["outcome"], result.reason
    assert result.line == EXPECTED[name].get("line")
    assert result.file == "src/lxc/start.c"
    assert result.reason


def test_real_start_files_parse_with_errors_and_still_locate() -> None:
    # tree-sitter cannot parse iterator macros or cleanup attributes: the tree has ERROR nodes
    # around them, and the drop is found anyway.
    import tree_sitter_c
    from tree_sitter import Language, Parser

    parser = Parser(Language(tree_sitter_c.language()))
    for name in ("lxc-1.0.11", "lxc-6.0.5"):
        assert parser.parse(source(name)).root_node.has_error, name
    assert find_sites(source("lxc-1.0.11")).outcome is Outcome.FOUND


def test_site_describes_the_2_0_11_drop() -> None:
    site = find_sites(source("lxc-2.0.11")).site
    assert site.state is SiteState.REWRITABLE
    assert (site.capability, site.capability_id) == ("CAP_SYS_BOOT", "CAP_SYS_BOOT")
    assert site.form is Form.CONDITION
    assert (site.log_family, site.log_call) == ("lxc", "SYSERROR")
    assert site.read_call == "prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0)"
    assert site.statement is not None and site.statement.end_line == site.line + 3
    text = source("lxc-2.0.11")
    assert [text[s.start : s.end] for s in site.error_statements] == [
        b'SYSERROR("Failed to remove the CAP_SYS_BOOT capability.");',
        b"goto out_warn_father;",
    ]


def test_old_eras_log_with_the_lxc_log_family() -> None:
    for name in ("lxc-0.5.0", "lxc-0.6.0", "lxc-0.6.1"):
        site = find_sites(source(name)).site
        assert (site.log_family, site.log_call) == ("lxc_log", "lxc_log_syserror"), name


def test_the_assigned_form_names_its_variable() -> None:
    site = find_sites(source("variant-assigned")).site
    assert (site.form, site.variable) == (Form.ASSIGNED, "ret")
    assert site.statement is not None and site.statement.line == site.line


def test_comment_in_call_is_left_out_of_the_read_call() -> None:
    site = find_sites(source("variant-comment-in-call")).site
    assert site.read_call == "prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0)"


@pytest.mark.parametrize(
    "snippet",
    [
        b"/* if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) return -1; */\n",
        b'static const char *s = "prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)";\n',
        b"// prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0);\n",
        b"#ifndef PR_CAPBSET_DROP\n#define PR_CAPBSET_DROP 24\n#endif\n",
        b"#if defined(PR_CAPBSET_DROP) && PR_CAPBSET_DROP == 24\n#endif\n",
    ],
)
def test_text_that_only_looks_like_a_drop_does_not_count(snippet: bytes) -> None:
    assert find_sites(snippet).outcome is Outcome.NOT_NEEDED


def test_a_macro_wrapping_the_drop_is_unrecognized_not_ignored() -> None:
    code = (
        b"#define DROP_BOOT() prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)\n"
        b'int f(void) { if (DROP_BOOT()) { SYSERROR("x"); return -1; } return 0; }\n'
    )
    result = find_sites(code)
    assert result.outcome is Outcome.UNRECOGNIZED
    assert "macro" in result.reason and result.line == 1


def _function(body: str) -> bytes:
    return f"int f(int *caps, int n)\n{{\n\tint ret, i = 0;\n{body}\treturn 0;\n}}\n".encode()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("\treturn prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0);\n", "return statement"),
        ("\twhile (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) n--;\n", "while statement"),
        ("\tif (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0) > 0)\n\t\treturn -1;\n", "combines"),
        ("\tif (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))\n\t\treturn -1;\n", "logging"),
        (
            '\tif (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0)) {\n\t\tERROR("x");\n'
            '\t} else {\n\t\tDEBUG("y");\n\t}\n',
            "else",
        ),
        (
            "\tret = prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0);\n\tn = 2;\n"
            '\tif (ret) { ERROR("x"); return -1; }\n',
            "next statement",
        ),
    ],
)
def test_forms_the_rewrite_cannot_handle_are_unrecognized(body: str, why: str) -> None:
    result = find_sites(_function(body))
    assert result.outcome is Outcome.UNRECOGNIZED
    assert why in result.reason
    assert result.line == 4


def test_a_second_drop_makes_it_ambiguous_and_lists_both() -> None:
    result = find_sites(source("variant-ambiguous"))
    assert result.outcome is Outcome.AMBIGUOUS
    assert [s.line for s in result.sites] == [77, 85]
    assert "77, 85" in result.reason


def test_scan_finds_drops_of_every_capability_for_later_recipes() -> None:
    # LXC 3.0 conf.c and 4.0 attach.c shapes (issue 7): found, and left alone by @cap-sys-boot.
    code = _function(
        "\tfor (; i < n; i++) {\n"
        "\t\tret = prctl(PR_CAPBSET_DROP, prctl_arg(caps[i]), prctl_arg(0),\n"
        "\t\t\t    prctl_arg(0), prctl_arg(0));\n"
        '\t\tif (ret < 0) {\n\t\t\tSYSERROR("Failed to remove capability %d", caps[i]);\n'
        "\t\t\treturn -1;\n\t\t}\n\t}\n"
        "\tif (prctl(PR_CAPBSET_DROP, prctl_arg(caps[0]), prctl_arg(0),\n"
        "\t\t  prctl_arg(0), prctl_arg(0)))\n"
        '\t\treturn syserror("Failed to drop capability %d", caps[0]);\n'
        "\tif (prctl(PR_CAPBSET_DROP, caps[i++], 0, 0, 0))\n"
        '\t\treturn syserror("Failed to drop capability %d", i);\n'
    )
    sites = scan(code).sites
    assert [(s.state, s.form, s.log_call) for s in sites[:2]] == [
        (SiteState.REWRITABLE, Form.ASSIGNED, "SYSERROR"),
        (SiteState.REWRITABLE, Form.CONDITION, "syserror"),
    ]
    assert sites[0].read_call == (
        "prctl(PR_CAPBSET_READ, prctl_arg(caps[i]), prctl_arg(0), prctl_arg(0), prctl_arg(0))"
    )
    assert sites[2].state is SiteState.UNRECOGNIZED and "side effect" in sites[2].reason
    result = find_sites(code)
    assert result.outcome is Outcome.NOT_NEEDED
    assert (
        "3 other drop(s): prctl_arg(caps[i]) at line 5, prctl_arg(caps[0]) at line" in result.reason
    )


def test_the_rewrite_relocates_as_already_patched_everywhere() -> None:
    recipe = get("@cap-sys-boot")
    for name in fixtures("found"):
        found = recipe.locate(source(name), "src/lxc/start.c")
        patched = recipe.render(found, source(name))
        again = recipe.locate(patched, "src/lxc/start.c")
        assert again.outcome is Outcome.ALREADY_PATCHED, name
        assert recipe.token.encode() in patched
        assert patched.count(b"PR_CAPBSET_READ 23") <= 1
