"""The ``ordersync`` command line: one module per command group, mounted lazily by :mod:`.main`."""

from ordersync.cli.main import app, main

__all__ = ["app", "main"]
