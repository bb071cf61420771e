"""Finding the application's queue from a ``module:attribute`` target (``pgqueue worker``,
``pgqueue serve --workers``)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from pgqueue.async_queue import AsyncQueue
from pgqueue.queue import Queue


def load_queue(target: str) -> Queue | AsyncQueue:
    """Import ``module:attribute`` (or ``module`` with a ``queue`` attribute); return the queue."""
    module_name, _, attribute = target.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
            raise  # the module exists but an import inside it failed
        raise typer.BadParameter(
            f"cannot import module {module_name!r} for {target!r}: run the worker from the "
            "directory that holds it, or add that directory to PYTHONPATH"
        ) from exc
    obj: Any = module
    for part in (attribute or "queue").split("."):
        if not hasattr(obj, part):
            raise typer.BadParameter(
                f"{target!r}: {module_name} has no attribute {part!r} (give module:attribute of "
                "a Queue or AsyncQueue)"
            )
        obj = getattr(obj, part)
    if callable(obj) and not isinstance(obj, (Queue, AsyncQueue)):
        obj = obj()
    if not isinstance(obj, (Queue, AsyncQueue)):
        raise typer.BadParameter(f"{target} is a {type(obj).__name__}, not a Queue or AsyncQueue")
    return obj
