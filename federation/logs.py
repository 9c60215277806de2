"""Structured JSON logs, with every ID number masked before a line is written."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from federation.identity.idnumber import mask_id_numbers_in_text

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class MaskingFilter(logging.Filter):
    """Last line of defence: code should never log an ID number, and this makes sure none is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_id_numbers_in_text(record.getMessage())
        record.args = ()
        for key, value in list(record.__dict__.items()):
            if key not in _STD and isinstance(value, str):
                setattr(record, key, mask_id_numbers_in_text(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = mask_id_numbers_in_text(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def setup(level: str = "INFO", *, json_lines: bool = True, stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(MaskingFilter())
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_twincity", False):
            root.removeHandler(h)
    handler._twincity = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
