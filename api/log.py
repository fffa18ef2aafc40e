"""Structured logging: JSON lines in production, readable lines in development.

Every record carries the request id of the request that produced it. Nothing here logs request
bodies, variables or query strings: those may hold patient data.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every record has, plus uvicorn's coloured duplicate of its message.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


# The database drivers log each statement with its parameters at DEBUG (Tortoise's client; aiosqlite
# prints the call it runs, values included): patient data. They are held at WARNING whatever
# LOG_LEVEL says, and the handler drops anything quieter from them should a library lower it again.
DATABASE_LOGGERS = ("tortoise", "aiosqlite", "asyncpg")


class _DatabaseStatementFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from_database = any(record.name == name or record.name.startswith(f"{name}.") for name in DATABASE_LOGGERS)
        return not from_database or record.levelno >= logging.WARNING


class _RequestIdFilter(logging.Filter):
    """The request's id on every record, unless the record names its own (a socket's operation
    or event logs under `<socket>.<n>[.<event>]`, the id its client is given: schema.extensions)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES and k != "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := getattr(record, "request_id", None):
            entry["request_id"] = request_id
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        request_id = getattr(record, "request_id", None)
        request = f" [{request_id}]" if request_id else ""
        extras = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}{request}: {record.getMessage()}"
        if extras:
            line += f" {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger (ours, uvicorn's, Tortoise's) through one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_DatabaseStatementFilter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our access line (api.middleware) replaces uvicorn's, which would log query strings.
    logging.getLogger("uvicorn.access").disabled = True
    for name in DATABASE_LOGGERS:  # SQL logging would print parameters, i.e. patient data
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("tortoise.db_client").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
