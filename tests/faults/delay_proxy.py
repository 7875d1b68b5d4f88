"""A TCP proxy that delays every chunk it forwards, for the slow-Redis scenario.

Each accepted connection gets a reader and a writer thread per direction: the reader stamps
each chunk with ``arrival + delay_s`` and queues it, the writer sends it when due. So the delay
is a latency added to every chunk (a request/reply round trip costs ``2 * delay_s``), not a
throughput cap, and ``delay_s`` can be changed at run time (chunks already queued keep their
stamp). Order within a direction is kept.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time


class DelayProxy:
    """Listen on ``127.0.0.1:<port>`` and forward to ``target``, delaying each chunk.

    Parameters
    ----------
    target_host, target_port : str, int
        Where connections are forwarded (the real ``redis-server``).
    delay_s : float
        Delay added to each chunk in each direction; settable while the proxy runs.

    Examples
    --------
    >>> proxy = DelayProxy("127.0.0.1", 6379, delay_s=0.02)  # doctest: +SKIP
    >>> proxy.start(); url = f"redis://127.0.0.1:{proxy.port}"  # doctest: +SKIP
    >>> proxy.delay_s = 0.0  # doctest: +SKIP
    """

    def __init__(self, target_host: str, target_port: int, delay_s: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.connections = 0
        self.chunks = 0
        self._thread = threading.Thread(target=self._accept, name="delay-proxy", daemon=True)

    def start(self) -> DelayProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:  # the listening socket was closed
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
                self.connections += 1
            self._pump(client, upstream)
            self._pump(upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        # bounded by what the sender writes within one delay: it waits for the replies
        chunks: queue.Queue[tuple[float, bytes] | None] = queue.Queue()

        def read() -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    chunks.put((time.monotonic() + self.delay_s, data))
            except OSError:
                pass
            chunks.put(None)

        def write() -> None:
            try:
                while (item := chunks.get()) is not None:
                    due, data = item
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    dst.sendall(data)
                    self.chunks += 1
            except OSError:
                pass
            # one side hung up: close both, so the peer sees it too
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        for target in (read, write):
            threading.Thread(target=target, name="delay-proxy-pump", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and drop every open connection."""
        self._closed.set()
        # shutdown first: on Linux, close() alone does not wake the accept() blocked on it
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._server.close()
        if self._thread.ident is not None:
            self._thread.join(5)
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
            self._sockets.clear()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
