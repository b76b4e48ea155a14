"""The one list of Debian packages that building upstream LXC needs (`invoke deps` installs it).

setup.sh does not repeat it: `invoke deps` reads it from here. The debian flavor does not use it:
there `apt-get build-dep` reads the tree's own debian/control.
"""

from __future__ import annotations

from typing import Literal

BuildSystem = Literal["autotools", "meson"]

# Compiler, packaging tools, and the one library the default profile links (libcap: the
# CAP_SYS_BOOT drop is compiled only with capabilities support). ccache makes rebuilds cheap.
COMMON: tuple[str, ...] = (
    "build-essential",
    "dpkg-dev",
    "pkg-config",
    "libcap-dev",
    "ccache",
)

# Releases 0.x to 4.0: autogen.sh (when there is no configure), configure, make.
AUTOTOOLS: tuple[str, ...] = ("autoconf", "automake", "libtool", "make")

# Releases 5.0 and later.
MESON: tuple[str, ...] = ("meson", "ninja-build")


def upstream_builddeps(build_system: BuildSystem) -> tuple[str, ...]:
    """The packages to install before building an upstream tree of this build system."""
    return COMMON + (AUTOTOOLS if build_system == "autotools" else MESON)
