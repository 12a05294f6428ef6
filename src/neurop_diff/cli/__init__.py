"""The `neurop-diff` command: one module per command, `main` dispatches.

* ``lightning.py``: fit / validate / test / predict (the one LightningCLI)
* ``upscale.py``: `upscale`, images and GeoTIFF scenes at any scale
* ``compare.py``: `compare`, several runs' test results (and the paper's numbers) in one table
* ``experiment.py``: `experiment`, one paper table's experiment set (handed `main` to check its commands)
* ``import_weights.py``: `import-weights`, the authors' weights as a neurop-diff checkpoint

Each command's module is imported only when that command runs (`neurop-diff compare` does not load Lightning
unless it logs to W&B).
"""

from __future__ import annotations

import errno
import os
import sys

from neurop_diff.runtime import tune_cpu_allocator

__all__ = ["EXTRA_COMMANDS", "main"]

EXTRA_COMMANDS = {
    "import-weights": "convert the authors' SRNO / LIIF / NeurOp-Diff weights into a neurop-diff checkpoint",
    "experiment": "run one paper table's experiment set (fit, test, compare): configs/experiments/",
    "upscale": "upscale images or GeoTIFF scenes at any scale with a checkpoint of either stage",
    "compare": "compare the test results of several runs (and the paper's numbers) in one table and figure",
}


def _run_extra(command: str, argv: list[str]) -> None:
    """Runs one of EXTRA_COMMANDS with `argv` (after the command name)."""
    if command == "import-weights":
        from neurop_diff.cli.import_weights import import_weights_main

        import_weights_main(argv)
    elif command == "upscale":
        from neurop_diff.cli.upscale import upscale_main

        upscale_main(argv)
    elif command == "compare":
        from neurop_diff.cli.compare import compare_main

        compare_main(argv)
    elif command == "experiment":
        from neurop_diff.cli.experiment import experiment_main

        experiment_main(argv, parse=main)
    else:
        raise KeyError(command)


def _is_user_error(err: BaseException) -> bool:
    """Errors whose message says what to do (a file, a value, what was expected): one line, no traceback."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        return err.errno == errno.ENOSPC
    return isinstance(err, (ValueError, FileNotFoundError, FloatingPointError))


def main(args: list[str] | None = None) -> None:
    """Entry point of `neurop-diff`; `args` defaults to sys.argv[1:] (tests pass a list).

    From the console (`args` None) an error with a message for people (a bad file or value, a full disk) ends
    the command with that one line and status 1 (`NEUROP_DIFF_TRACEBACK=1` shows the traceback); called
    with a list (from Python) the exception propagates."""
    console = args is None
    argv = list(sys.argv[1:] if console else args)
    tune_cpu_allocator()
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            _run_extra(argv[0], argv[1:])
            return
        if argv and argv[0] in ("-h", "--help"):
            extra = "\n".join(f"  {name:<16}{text}" for name, text in EXTRA_COMMANDS.items())
            print(f"Further commands (outside LightningCLI):\n{extra}\n")
        from neurop_diff.cli.lightning import lightning_cli

        # From the console LightningCLI reads sys.argv itself: passing it too would make it warn about "both".
        lightning_cli(None if console else argv)
    except Exception as err:
        if not console or not _is_user_error(err) or os.environ.get("NEUROP_DIFF_TRACEBACK"):
            raise
        command = argv[0] if argv and not argv[0].startswith("-") else ""
        sys.exit(f"neurop-diff {command}: error: {err}".replace("  ", " "))
