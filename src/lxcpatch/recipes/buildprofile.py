"""How lxcpatch configures and packages upstream LXC: the default profile and the package's
relations to the distribution's own LXC packages.

The profile builds on the running distribution without optional extras: no documentation
(man pages need docbook2x, API docs doxygen), no language bindings (the Python bindings of 2.0.x
do not install with a Python that is not Debian's), no examples or tests, and none of the
optional security libraries (AppArmor, SELinux, seccomp), TLS, cgmanager or PAM. Capabilities
support stays on: the CAP_SYS_BOOT drop that lxcpatch patches is compiled only with it.
`--configure-args` adds to (and, given later, overrides) these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Extras that the profile switches off, for --help and the docs.
EXTRAS_OFF = (
    "docs (man pages, API docs)",
    "Python and Lua bindings",
    "examples",
    "tests",
    "AppArmor",
    "SELinux",
    "seccomp",
    "GnuTLS/OpenSSL",
    "cgmanager",
    "PAM",
    "io_uring",
)

# configure flags in the order given; each is passed only when `configure --help` offers it.
AUTOTOOLS_FLAGS: tuple[str, ...] = (
    "--disable-werror",
    "--disable-doc",
    "--disable-api-docs",
    "--disable-python",
    "--disable-lua",
    "--disable-examples",
    "--disable-tests",
    "--disable-apparmor",
    "--disable-selinux",
    "--disable-seccomp",
    "--disable-gnutls",
    "--disable-openssl",
    "--disable-cgmanager",
    "--disable-pam",
    "--disable-liburing",
    "--disable-fuzzers",
    "--disable-sanitizers",
    "--disable-asan",
    "--disable-coverity-build",
    "--disable-rpath",
    "--enable-capabilities",
    "--with-init-script=systemd",
    "--with-systemdsystemunitdir=/lib/systemd/system",
)

# meson options by name: value for a boolean option, value for a feature option.
MESON_OPTIONS: dict[str, tuple[str, str]] = {
    "man": ("false", "disabled"),
    "api-docs": ("false", "disabled"),
    "examples": ("false", "disabled"),
    "tests": ("false", "disabled"),
    "apparmor": ("false", "disabled"),
    "selinux": ("false", "disabled"),
    "seccomp": ("false", "disabled"),
    "openssl": ("false", "disabled"),
    "pam-cgroup": ("false", "disabled"),
    "io-uring-event-loop": ("false", "disabled"),
    "sd-bus": ("false", "disabled"),
    "dbus": ("false", "disabled"),
    "oss-fuzz": ("false", "disabled"),
    "coverity-build": ("false", "disabled"),
    "specfile": ("false", "disabled"),
    "capabilities": ("true", "enabled"),
}
MESON_STRINGS: dict[str, str] = {
    "init-script": "systemd",
    "systemd-unitdir": "/lib/systemd/system",
}

# The distribution's LXC packages that ours replaces (Debian and Ubuntu names, old and new).
# Ours holds liblxc, the tools and the headers, so it stands in for all of them.
REPLACED_PACKAGES: tuple[str, ...] = (
    "liblxc1",
    "liblxc-common",
    "liblxc-dev",
    "lxc-dev",
    "lxc1",
    "lxc-utils",
)
# Shares files (templates) with ours, but may stay installed.
OVERWRITTEN_PACKAGES: tuple[str, ...] = ("lxc-templates",)

_CONFIGURE_OPTION = re.compile(r"--(?:enable|disable|with|without)-([A-Za-z0-9_-]+)")
_FLAG_NAME = re.compile(r"^--(?:enable|disable|with|without)-([A-Za-z0-9_-]+?)(?:=.*)?$")
_MESON_OPTION = re.compile(r"""option\(\s*'([^']+)'\s*,\s*type\s*:\s*'([^']+)'""")


def configure_options(help_text: str) -> frozenset[str]:
    """The feature names that `configure --help` offers (`--disable-werror` gives "werror")."""
    return frozenset(_CONFIGURE_OPTION.findall(help_text))


def autotools_profile(help_text: str) -> list[str]:
    """The profile's configure flags that this configure script understands."""
    offered = configure_options(help_text)
    chosen = []
    for flag in AUTOTOOLS_FLAGS:
        match = _FLAG_NAME.match(flag)
        if match and match.group(1) in offered:
            chosen.append(flag)
    return chosen


def meson_profile(options_text: str) -> list[str]:
    """The profile's `-Dname=value` arguments for the options this meson_options.txt declares."""
    chosen = ["-Dwerror=false"]
    for name, kind in _MESON_OPTION.findall(options_text):
        if name in MESON_OPTIONS:
            boolean, feature = MESON_OPTIONS[name]
            if kind == "boolean":
                chosen.append(f"-D{name}={boolean}")
            elif kind == "feature":
                chosen.append(f"-D{name}={feature}")
        elif name in MESON_STRINGS and kind in {"string", "array", "combo"}:
            chosen.append(f"-D{name}={MESON_STRINGS[name]}")
    return chosen


def offers_werror_switch(help_text: str) -> bool:
    return "werror" in configure_options(help_text)


def describe_extras(extras: Sequence[str] = EXTRAS_OFF) -> str:
    return ", ".join(extras)
