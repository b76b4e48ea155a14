from lxcpatch.cli import main

main()
