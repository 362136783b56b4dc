"""`drain-receiver` / `python -m receiver`: a sub-command from `COMMANDS`, or else the server."""

from __future__ import annotations

import inspect
import logging
import logging.config
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from receiver import send_test
from receiver.logs import logging_config
from receiver.secret_file import new_secret, read_secrets, write_secrets
from receiver.server import serve
from receiver.settings import Settings, load_settings
from receiver.startup import StartupError, check_settings, describe, hold_standard_streams

log = logging.getLogger("receiver")

EXIT_USAGE = 2



def _search(argv: Sequence[str]) -> int:
    """Find records in what the file sink wrote (filters, text, SQL, --follow)."""
    from receiver.search.cli import main_search  # imported on use: serving needs no DuckDB

    return main_search(argv)


def _stats(argv: Sequence[str]) -> int:
    """Records per interval, by level, source, status or project, as a text chart."""
    from receiver.search.cli import main_stats

    return main_stats(argv)


def _compact(argv: Sequence[str]) -> int:
    """Give compressed files a Parquet twin, which searches read instead (much faster)."""
    from receiver.search.cli import main_compact

    return main_compact(argv)


def _ui(argv: Sequence[str]) -> int:
    """Serve the search page over --dir on its own listener, behind a token."""
    from receiver.search.web_cli import main_ui

    return main_ui(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "send-test": send_test.main,
    "search": _search,
    "stats": _stats,
    "compact": _compact,
    "ui": _ui,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return serve_main(argv)


def commands_help() -> str:
    """One line per sub-command, from the first line of its `main`'s docstring."""
    lines = [f"  drain-receiver {name} --help: {(inspect.getdoc(command) or '').splitlines()[0]}"
             for name, command in COMMANDS.items()]
    return "Sub-commands (each has its own --help):\n" + "\n".join(lines)


def serve_main(argv: Sequence[str]) -> int:
    """Check every setting, make sure a secret exists, then serve until SIGTERM."""
    settings = load_settings(argv, epilog=commands_help())
    config = logging_config(settings.log_level, settings.log_format, settings.access_log)
    logging.config.dictConfig(config)
    os.umask(settings.umask)
    try:
        hold_standard_streams(settings)
        check_settings(settings)
    except StartupError as error:
        log.error("%s", error)
        return EXIT_USAGE
    try:
        ensure_secret(settings)
    except OSError as error:
        log.error("cannot read or create the secret file %s: %s. Set DRAIN_SECRET_FILE to a "
                  "writable path, or DRAIN_SECRET.", settings.secret_file.absolute(),
                  error.strerror or error)
        return EXIT_USAGE
    log.info("%s", describe(settings))
    _exit_cleanly_on(signal.SIGTERM, signal.SIGINT)
    serve(settings, config)
    return 0


def ensure_secret(settings: Settings) -> None:
    """Generate a secret into the secret file when none is configured anywhere."""
    if settings.secrets or read_secrets(settings.secret_file):
        return
    write_secrets(settings.secret_file, [new_secret()])
    log.warning(
        "no drain secret was configured: generated one into %s (mode 0600). Register the drain "
        "with `python register.py`, which uses this file, or give Vercel the secret it holds.",
        settings.secret_file,
    )


def _exit_cleanly_on(*signals: signal.Signals) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it caught; make that an exit 0."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    for sig in signals:
        signal.signal(sig, leave)


if __name__ == "__main__":
    sys.exit(main())
