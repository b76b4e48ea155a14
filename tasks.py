"""`invoke <task>` from the repository: the same collection as the `lxcpatch` command."""

from lxcpatch.tasks import ns

__all__ = ["ns"]
