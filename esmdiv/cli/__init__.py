"""The ``esmdiv`` command line: the only package that imports typer or rich.

:mod:`esmdiv.cli.app` parses options, calls a driver and exits; :mod:`esmdiv.cli.console` renders.
"""

from esmdiv.cli.app import main

__all__ = ["main"]
