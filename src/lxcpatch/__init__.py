"""lxcpatch: patch, package and verify LXC so that it runs inside containers."""

__version__ = "0.1.0"
