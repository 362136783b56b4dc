"""The service's own logs: one line per event, on stderr (stdout carries only records)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson


def client_host(client: tuple[str, int] | None) -> str:
    """A peer's address for a log line; "-" where the server does not know it."""
    return client[0] if client else "-"


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class JSONFormatter(UTCFormatter):
    """One JSON object a line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def logging_config(level: str, log_format: str, access_log: bool) -> dict[str, Any]:
    """A `logging.config.dictConfig` for our loggers and uvicorn's, all to stderr."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {
                "()": UTCFormatter,
                "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            },
            "json": {"()": JSONFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "receiver": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {
                "handlers": ["stderr"],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
        },
    }
