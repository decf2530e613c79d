"""The listening socket of an HTTP server, bound before any slow start-up work.

Binding first means a busy port is reported at once, in one line, before a spec is loaded, an
index is built or the isolate is compiled; and the port cannot be taken by another process
between a check and the real bind. Native threads that start-up work runs (embeddings, the
isolate's compiler) never see an interpreter shutting down under them.
"""

from __future__ import annotations

import errno
import socket

from ._errors import ConfigError

__all__ = ["BIND_PROBLEMS", "listen_socket"]

# What a failed bind means for the person starting the server, by errno ({host}, {port}, {why}).
BIND_PROBLEMS: dict[int, str] = {
    errno.EADDRINUSE: "port {port} on {host} is in use; pick another with --port",
    errno.EACCES: "port {port} on {host} needs privileges this user lacks; pick one above 1023 with --port",
    errno.EADDRNOTAVAIL: "{host} is not an address of this machine; pick another with --host",
}
OTHER_PROBLEM = "port {port} on {host} cannot be used ({why}); pick another with --port or --host"


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (uvicorn listens on it), or ``ConfigError`` in one line
    (code ``config.port_unavailable``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        template = BIND_PROBLEMS.get(exc.errno or 0, OTHER_PROBLEM)
        why = exc.strerror or str(exc)
        raise ConfigError(template.format(host=host, port=port, why=why), code="config.port_unavailable") from None
    sock.set_inheritable(True)
    return sock
