"""``python -m esmdiv``: the command line (:func:`esmdiv.cli.main`)."""

from esmdiv.cli import exit_now, main
from esmdiv.errors import EXIT_INTERRUPTED

if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        # Under ``python -m``, CPython ends the process by SIGINT (-2) once it has exited if a
        # KeyboardInterrupt ever passed through C code running Python (pybind11's exec in torch),
        # even one that esmdiv handled: an interrupted run leaves with its code, at once.
        if done.code != EXIT_INTERRUPTED:
            raise
        exit_now(EXIT_INTERRUPTED)
