"""Recipes that know LXC's code. TOKENS: the string each recipe compiles into patched code."""

TOKENS = {
    "@cap-sys-boot": "lxcpatch:cap-sys-boot-tolerated",
    "@cap-drops": "lxcpatch:cap-drop-tolerated",
}
