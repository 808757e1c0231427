"""Shared CLI plumbing: subcommand dispatch, one-line user errors, --debug for tracebacks."""
from __future__ import annotations

import importlib
import logging
import signal
import sys

from data.common.errors import SpotMAEError


def dispatch(stage: str, commands: dict[str, tuple[str, str]], argv: list[str] | None = None,
             default: str | None = None) -> int:
    """Run `python -m STAGE COMMAND ...`; `commands` maps a name to (module, one-line help). With `default`,
    arguments that start with an option or an override (`python -m pretrain --config X`) go to that command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    if default and argv and (argv[0].startswith("-") or "=" in argv[0]) and argv[0] not in ("-h", "--help"):
        argv.insert(0, default)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"usage: python -m {stage} COMMAND [options] [--debug]", "", "commands:"]
        lines += [f"  {name:12s} {text}" for name, (_, text) in commands.items()]
        print("\n".join(lines), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(commands[argv[0]][0])
    return run_main(module.main, argv[1:], debug)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C: temp files are removed on the way out
    (data.common.atomic) and nothing half-written is left, whichever of the two signals stopped the command."""


def _raise_terminated(signum, frame):
    raise Terminated()


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM as SIGINT in this process."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def _exit_terminated(signum, frame):
    raise SystemExit(128 + signum)


def _quiet_unraisable(unraisable) -> None:
    # a SIGTERM that lands in a finaliser (decord's VideoReader.__del__) cannot unwind it: Python prints
    # "Exception ignored" on the shared stderr, after the command's one-line "terminated", and the worker ends
    # with the pool instead
    if not isinstance(unraisable.exc_value, SystemExit):
        sys.__unraisablehook__(unraisable)


def exit_on_sigterm() -> None:
    """A process-pool initializer: SIGTERM unwinds the worker's task (its temp files are removed on the way
    out) and ends the worker quietly. SystemExit, not KeyboardInterrupt: multiprocessing prints a traceback
    for a worker that ends with anything else."""
    signal.signal(signal.SIGTERM, _exit_terminated)
    sys.unraisablehook = _quiet_unraisable


def run_main(main, argv: list[str], debug: bool = False) -> int:
    """Call main(argv); a SpotMAEError becomes one line on stderr and exit 2 (traceback with --debug)."""
    interrupt_on_sigterm()
    try:
        return int(main(argv) or 0)
    except SpotMAEError as e:
        if debug:
            raise
        _end_progress_bars()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        _end_progress_bars()
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        _end_progress_bars()
        print("interrupted", file=sys.stderr)
        return 130


def _end_progress_bars() -> None:
    """Close tqdm bars the failing command left open: else the error line is glued to the bar's line."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()
