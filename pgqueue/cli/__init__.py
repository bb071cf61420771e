"""The ``pgqueue`` command (typer): workers and the schema (:mod:`.main`), operator commands
on tasks and kinds (:mod:`.operator`), the HTTP service (:mod:`.serve`), and finding an
application's queue (:mod:`.loading`). Run it as ``pgqueue`` or ``python -m pgqueue.cli``."""
