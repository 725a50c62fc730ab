"""Small HTTP GET/POST helpers for the checks (stdlib; bounded by the check's deadline)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class HttpError(Exception):
    """One-line reason a request failed (unreachable, HTTP status, bad body)."""


def get(url: str, timeout: float, accept_status: tuple[int, ...] = (200,)) -> tuple[int, bytes]:
    """(status, body); HttpError when unreachable or the status is not accepted."""
    req = urllib.request.Request(url, headers=  # noqa: S310 - http(s) URL from config
                                 {"Accept": "text/plain, application/json, */*"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL from config
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        if e.code in accept_status:
            return e.code, body
        raise HttpError(f"{url} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror
        raise HttpError(f"{url} not reachable: {reason}") from None


def get_json(url: str, timeout: float, accept_status: tuple[int, ...] = (200,)) -> tuple[int, Any]:
    status, body = get(url, timeout, accept_status)
    try:
        return status, json.loads(body)
    except ValueError:
        raise HttpError(f"{url} did not answer JSON") from None
