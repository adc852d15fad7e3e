"""Logging for the API and the worker: one line per event, as text for people or as JSON
(``LOG_FORMAT=json``) for machines; a job's id is its own field when the event is about a job."""
from __future__ import annotations

import json
import logging
import re

_JOB_ID = re.compile(r"\bjob ([0-9a-f]{32})\b")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name, "message": message}
        job = getattr(record, "job_id", None) or (m.group(1) if (m := _JOB_ID.search(message)) else None)
        if job:
            line["job_id"] = job
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        formatter = JsonFormatter()
        formatter.converter = __import__("time").gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
