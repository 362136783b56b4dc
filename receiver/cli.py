"""`python -m receiver` / `drain-receiver`: read the settings, make sure a secret exists, serve."""

from __future__ import annotations

import logging
import logging.config
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from receiver.logs import logging_config
from receiver.secret_file import new_secret, read_secrets, write_secrets
from receiver.server import serve
from receiver.settings import Settings, load_settings

log = logging.getLogger("receiver")

EXIT_USAGE = 2


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


def _search(argv: Sequence[str]) -> int:
    from receiver.search.cli import main_search  # imported on use: the receiver does not need DuckDB

    return main_search(argv)


def _stats(argv: Sequence[str]) -> int:
    from receiver.search.cli import main_stats

    return main_stats(argv)


def _ui(argv: Sequence[str]) -> int:
    from receiver.search.web_cli import main_ui

    return main_ui(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "search": _search,
    "stats": _stats,
    "ui": _ui,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    settings = load_settings(argv)
    config = logging_config(settings.log_level, settings.log_format, settings.access_log)
    logging.config.dictConfig(config)
    try:
        ensure_secret(settings)
    except OSError as error:
        log.error("cannot read or create the secret file %s: %s. Set DRAIN_SECRET_FILE to a "
                  "writable path, or DRAIN_SECRET.", settings.secret_file, error)
        return EXIT_USAGE
    _exit_cleanly_on(signal.SIGTERM, signal.SIGINT)
    serve(settings, config)
    return 0


def _exit_cleanly_on(*signals: signal.Signals) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it caught; make that an exit 0."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    for sig in signals:
        signal.signal(sig, leave)


if __name__ == "__main__":
    sys.exit(main())
