"""Structured JSON logs for machines. Callers never pass personal data (recipients, personalisation)."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Any

import orjson

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            # An exception's text can carry SQL parameters, that is personal data: its type and the
            # frames (code, not values) locate the fault without them.
            exc = record.exc_info[1]
            doc["error"] = type(exc).__name__
            doc["trace"] = "".join(traceback.format_tb(exc.__traceback__))
        return orjson.dumps(doc, default=str).decode()


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # botocore logs whole requests (recipients, bodies) at DEBUG: never below WARNING.
    for noisy in ("amqp", "kombu", "httpx", "httpcore", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
