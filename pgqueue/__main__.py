"""``python -m pgqueue``: the pgqueue command."""

from pgqueue.cli.main import main

main()
