"""``python -m pgqueue``: the pgqueue command."""

from pgqueue.cli import main

main()
