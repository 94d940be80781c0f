"""Log lines of every process: plain text (the default) or one JSON object a line
(``SEGMENTS_LOG_FORMAT=json``), each carrying the id of the HTTP request being served.

The request id lives in a context variable set by the HTTP services' request observer
(:func:`shared.metrics.observe_requests`): taken from the client's ``X-Request-Id`` when it is
sane (1-64 letters, digits, ``.``, ``_``, ``-``), otherwise made here, and echoed in the
response's ``X-Request-Id``. Whatever a handler logs while serving the request carries it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar

from shared.settings import Settings

#: The id of the request this task is serving (None outside a request).
request_id: ContextVar[str | None] = ContextVar("segments_request_id", default=None)

_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# A process-unique prefix and a counter: unique across processes without a random draw per
# request (os.urandom is a system call).
_PREFIX = os.urandom(5).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A fresh request id (unique per process start, 16+ characters)."""
    return f"{_PREFIX}{next(_COUNTER):06x}"


def request_id_from(value: bytes | None) -> str:
    """The client's ``X-Request-Id`` when sane, else a fresh one (an id is logged and sent
    back: it must not carry control characters, spaces or a novel)."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value.decode()
    return new_request_id()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, request id
    (when serving one), service, and the traceback of an exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            out["requestId"] = rid
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextRequestId(logging.Filter):
    """Text lines name the request id too (``[req <id>]``) when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.request_tag = f" [req {rid}]" if rid is not None else ""
        return True


_HANDLER = "segments"


def configure_logging(settings: Settings, service: str) -> None:
    """INFO from our loggers in ``settings.log_format``; arq and the HTTP client at WARNING:
    arq logs a line per job (noise at our rates) and httpx logs each request's full URL at
    INFO, and a webhook URL may carry credentials (``https://user:token@host/...``,
    ``?token=``). Our own delivery lines name the scheme and host only."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s%(request_tag)s %(message)s"))
        handler.addFilter(_TextRequestId())
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER] + [handler]
    root.setLevel(logging.INFO)
    for noisy in ("arq", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # a traceback per reconnection attempt while PostgreSQL is down; our own line says it
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)
    # uvicorn's own loggers go through ours (JSON too), at WARNING as before
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.WARNING)
