"""The exporter's HTTP server: `/metrics`, `/healthz`, landing page `/`, 404 elsewhere.

A ``ThreadingHTTPServer`` (one thread per request, daemon threads) on the configured
listen address (127.0.0.1 by default); :meth:`MetricsServer.stop` shuts it down and closes
the socket. `/metrics` renders the exporter's own registry in the classic text format with
:class:`.render.TextRenderer` (OpenMetrics only for a scraper that does not accept
text). `/healthz` answers 200 or 503 with the JSON from :meth:`Health.report`.
Extra JSON/text endpoints (e.g. oms-lifecycle's `/orders`) go in ``app.extra_routes``:
``path -> callable() -> (status, content_type, body_bytes)``.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder

from ..config import listen_addr

if TYPE_CHECKING:
    from .runtime import Exporter

log = logging.getLogger("tradeops.exporters.http")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: Exporter

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback to stderr by default (e.g. a client that resets
        # the connection before sending its request): one log line instead
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("client %s: %s", client_address[0], exc)
        else:
            log.warning("http: error serving %s: %s: %s", client_address[0], type(exc).__name__, exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tradeops-exporter"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        # one line per request is noise at 15 s scrapes; keep it at debug level
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, ctype: str, body: bytes, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802 - stdlib API
        self.do_GET(head=True)

    def do_GET(self, head: bool = False):  # noqa: N802 - stdlib API
        app = self.server.app
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                accept = self.headers.get("Accept", "")
                app.scrape_started()
                try:
                    if not accept or "text/plain" in accept or "*/*" in accept:
                        # the classic text format (what Prometheus also accepts when it
                        # prefers OpenMetrics), through the cached fast renderer
                        body, ctype = app.renderer.render(app.registry), CONTENT_TYPE_PLAIN_0_0_4
                    else:
                        encoder, ctype = choose_encoder(accept)
                        body = encoder(app.registry)
                finally:
                    app._scrape_local.start = None
                self._send(200, ctype, body, head)
            elif path == "/healthz":
                ok, report = app.health.report()
                self._send(200 if ok else 503, "application/json",
                           json.dumps(report).encode() + b"\n", head)
            elif path == "/":
                self._send(200, "text/html; charset=utf-8", _landing(app), head)
            elif path in app.extra_routes:
                status, ctype, body = app.extra_routes[path]()
                self._send(status, ctype, body, head)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - never kill the server on one request
            log.exception("%s: error serving %s", app.name, path)
            with contextlib.suppress(OSError):
                self._send(500, "text/plain; charset=utf-8",
                           f"internal error: {type(e).__name__}\n".encode(), head)


def _landing(app: Exporter) -> bytes:
    links = [("/metrics", "metrics"), ("/healthz", "health (JSON)"), *app.landing_links]
    items = "".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a></li>' for h, t in links)
    name = html.escape(app.name)
    return (f"<!doctype html><html><head><title>tradeops {name} exporter</title></head>"
            f"<body><h1>tradeops {name} exporter</h1><ul>{items}</ul></body></html>\n").encode()


class MetricsServer:
    def __init__(self, app: Exporter):
        host, port = listen_addr(app.listen)
        server_cls = _Server6 if ":" in host else _Server
        self._httpd = server_cls((host, port), _Handler)
        self._httpd.app = app
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="exporter-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(2)
