"""A real S3-compatible server for tests: moto's server mode on 127.0.0.1, never a mock object."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen
    recording: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": self.endpoint}

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def replay_recording(self) -> None:
        """Rebuild the killed server's state: replay every request it received before the kill."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/replay-recording", method="POST")
        urllib.request.urlopen(req, timeout=30).read()


def start_moto(port: int | None = None, recording: Path | None = None) -> MotoServer:
    """Start ``moto_server`` and wait until it answers; with ``recording``, every request is journaled."""
    port = port or free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    if recording is not None:
        env.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return MotoServer(port, proc, recording)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start within 20 s")


def make_bucket(server: MotoServer, bucket: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
    fs.mkdir(bucket)


class NetworkGate:
    """A TCP forwarder on 127.0.0.1 in front of a server: ``close()`` is a network outage (connections refused,
    open streams cut) while the server behind keeps its state, and ``open()`` ends it.

    Killing and restarting moto instead leaves a window where the new server answers before its journal is
    replayed, so a client retrying at that moment sees a real "not found"; behind a gate the data never goes.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._streams: set[socket.socket] = set()
        self._hold_pattern: re.Pattern[bytes] | None = None
        self._hold_after = 0
        self.held = threading.Event()  # set once requests are being held (see ``hold_requests_after``)
        self.open()

    def hold_requests_after(self, request_line: str, occurrences: int) -> threading.Event:
        """From the request whose first line matches the regex ``request_line`` for the ``occurrences``-th time
        on, hold every new request (its bytes are never forwarded) while requests already sent finish: a client
        frozen at a known point, so a test acts there instead of racing a fast client. Returns the event set when
        holding starts."""
        with self._lock:
            self._hold_pattern, self._hold_after = re.compile(request_line.encode()), occurrences
        return self.held

    def endpoint_options(self, server: MotoServer) -> dict[str, Any]:
        """``server``'s storage options with the endpoint moved to this gate."""
        return dict(server.storage_options, endpoint_url=f"http://127.0.0.1:{self.port}")

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _shut(listener, close=True)  # wakes the accept() below
        with self._lock:
            streams, self._streams = self._streams, set()
        for stream in streams:
            _shut(stream)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _shut(client, close=True)
                continue
            with self._lock:
                self._streams.update((client, upstream))
            threading.Thread(target=self._forward, args=(client, upstream), daemon=True).start()

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        """Pipe both ways; close the pair only when both pipes are done, so no thread uses a closed (and maybe
        reused: Ray's gRPC opens sockets all the time in the same process) file descriptor."""
        pipes = [threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True),
                 threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True)]
        for pipe in pipes:
            pipe.start()
        for pipe in pipes:
            pipe.join()
        _shut(client, close=True)
        _shut(upstream, close=True)

    def _pipe(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server and self._holds(data):
                    while src.recv(65536):  # swallowed: the client waits on an open stream until close()
                        pass
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(src)
            _shut(dst)

    def _holds(self, data: bytes) -> bool:
        """Whether this client-to-server chunk is held: only chunks that start a request are, so a body already
        under way still arrives whole."""
        if self._hold_pattern is None or not data.startswith(_REQUEST_STARTS):
            return False
        with self._lock:
            if not self.held.is_set() and self._hold_pattern.match(data.split(b"\r\n", 1)[0]):
                self._hold_after -= 1
                if self._hold_after <= 0:
                    self.held.set()
            return self.held.is_set()


_REQUEST_STARTS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ")
_SHUT_LOCK = threading.Lock()


def _shut(sock: socket.socket, close: bool = False) -> None:
    """Shut a socket down (wakes a thread blocked on it); close it only where nothing else can still use it."""
    with _SHUT_LOCK:
        if sock.fileno() == -1:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if close:
            sock.close()
