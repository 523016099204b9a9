"""Real S3 faults over real sockets: an HTTP proxy in front of the moto server.

The lake is pointed at the proxy's endpoint instead of moto's. Every request is forwarded
unchanged, except the PUTs (object puts and multipart part uploads — where a file's bytes
go) that a rule picks, which get

- `"503"`: a `503 SlowDown` answer, as S3 gives when it throttles;
- `"drop"`: the connection reset (RST) after half the body was read, as when a load
  balancer or the network drops it mid-upload.

`FaultyS3Proxy(upstream, faults={3: "503", 5: "drop"})` fails the 3rd and 5th PUT;
`fail_from=(7, "503")` fails every PUT from the 7th on (an outage: retries run out);
`methods=("PUT", "DELETE")` counts and fails deletes too. `puts` counts the requests of those
methods seen, `injected` lists what was done. No mocks: the S3 client sees the same
bytes on the wire it would see from AWS.
"""

from __future__ import annotations

import socket
import struct
import threading
from urllib.parse import urlparse

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>flowsuite-fault</RequestId></Error>"
)
RESPONSE_503 = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
    + f"Content-Length: {len(SLOW_DOWN)}\r\n\r\n".encode() + SLOW_DOWN
)


class FaultyS3Proxy:
    def __init__(self, upstream: str, faults: dict[int, str] | None = None,
                 fail_from: tuple[int, str] | None = None, methods: tuple[str, ...] = ("PUT",)):
        parsed = urlparse(upstream)
        self.methods = {m.encode() for m in methods}
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.faults = dict(faults or {})
        self.fail_from = fail_from
        self.puts = 0
        self.requests = 0
        self.injected: list[tuple[int, str, str]] = []  # (n-th PUT, fault, path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="faulty-s3", daemon=True)

    # --- the relay: requests parsed (to count PUTs), bytes forwarded verbatim ----------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream, timeout=60)
        send_lock = threading.Lock()
        threading.Thread(target=self._pipe_back, args=(upstream, client, send_lock), daemon=True).start()
        reader = client.makefile("rb")
        try:
            while True:
                head = _read_head(reader)
                if head is None:
                    return
                method, path = head.split(b" ", 2)[:2]
                with self._lock:
                    self.requests += 1
                fault = None
                if method in self.methods and not path.split(b"?")[0].endswith(b"/"):
                    fault = self._fault_for_next_put(path.decode())
                if fault == "drop":
                    reader.read1(1024)  # part of the body, then the connection goes
                    # RST, not FIN: the client sees "connection reset" mid-request.
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                body = _read_body(reader, head)
                if fault == "503":
                    with send_lock:
                        client.sendall(RESPONSE_503)
                    continue
                upstream.sendall(head + body)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    @staticmethod
    def _pipe_back(upstream: socket.socket, client: socket.socket, send_lock: threading.Lock) -> None:
        try:
            while data := upstream.recv(65536):
                with send_lock:
                    client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    @property
    def endpoint(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def _fault_for_next_put(self, path: str) -> str | None:
        with self._lock:
            self.puts += 1
            n = self.puts
            fault = self.faults.get(n)
            if fault is None and self.fail_from is not None and n >= self.fail_from[0]:
                fault = self.fail_from[1]
            if fault:
                self.injected.append((n, fault, path))
            return fault

    def start(self) -> FaultyS3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_head(reader) -> bytes | None:
    """Request line and headers, raw; None when the client closed the connection."""
    lines = []
    while True:
        line = reader.readline()
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _read_body(reader, head: bytes) -> bytes:
    """The body exactly as sent (chunk framing included)."""
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        raw = bytearray()
        while True:
            size_line = reader.readline()
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = reader.readline()
                    raw += line
                    if line in (b"\r\n", b"\n", b""):
                        return bytes(raw)
            raw += reader.read(size)
            raw += reader.readline()
    return reader.read(int(_header(head, b"content-length") or 0))
