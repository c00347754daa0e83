"""A byte relay between a TCP port on 127.0.0.1 and a Unix socket file.

Phoenix runs in a private network namespace (``unshare -n``) because its gRPC listener binds
every interface. A Unix socket *file* is visible across network namespaces, so one relay
inside the namespace (``python tests/relay.py UNIX_PATH PORT``: Unix socket -> 127.0.0.1:PORT
of the namespace) and one in the test process (`TcpToUnixRelay`: 127.0.0.1:free port ->
Unix socket) give the tests Phoenix's HTTP port, and nothing else, on the host's loopback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _bridge(client: socket.socket, upstream: socket.socket) -> None:
    forward = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
    forward.start()
    _pipe(upstream, client)
    forward.join()
    client.close()
    upstream.close()


class _Relay:
    def __init__(self, listener: socket.socket, connect: object) -> None:
        self._listener = listener
        self._connect = connect
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect()  # type: ignore[operator]
            except OSError:
                client.close()
                continue
            threading.Thread(target=_bridge, args=(client, upstream), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


class TcpToUnixRelay(_Relay):
    """Listen on 127.0.0.1 (a free port) and forward each connection to a Unix socket."""

    def __init__(self, unix_path: str) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port: int = listener.getsockname()[1]

        def connect() -> socket.socket:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(unix_path)
            return upstream

        super().__init__(listener, connect)


def serve_unix_to_tcp(unix_path: str, port: int) -> None:
    """Forward every connection on the Unix socket ``unix_path`` to 127.0.0.1:``port``."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(unix_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(unix_path)
    listener.listen(64)

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=None)

    relay = _Relay(listener, connect)
    relay._thread.join()


if __name__ == "__main__":
    serve_unix_to_tcp(sys.argv[1], int(sys.argv[2]))
