"""``python -m pgqueue.cli``: the pgqueue command."""

from pgqueue.cli.main import main

main()
