"""Predictions HAProxy dropped before any replica saw them, counted 499 from its log.

A replica counts a client that leaves once its request has reached it (routes.py). But
Serve's HAProxy configuration has `option abortonclose`: a client that sends its request
and disconnects while HAProxy is still connecting to a replica (a new connection, none
idle) has its request dropped there, and no replica ever counts it. HAProxy logs every
request (`option httplog`) to RAY_SERVE_HAPROXY_LOG_TARGET; the launcher points that at a
datagram socket of its own and counts, in the shared metrics, each prediction whose log
line says the client aborted (termination state `C...`) before a connection to a replica
was established (`Tc` = -1).
"""

import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from serving_common.protocol import PREDICT_PATHS

# HAProxy's HTTP log format (`option httplog`): ... frontend backend/server
# TR/Tw/Tc/Tr/Ta status bytes req_cookie res_cookie termination_state
# actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue "METHOD URI VERSION"
HTTP_LOG = re.compile(
    r" \S+ \S+/\S+ -?\d+/-?\d+/(?P<connect>-?\d+)/-?\d+/\+?-?\d+ -?\d+ \+?\d+ \S+ \S+ "
    r"(?P<state>\S{4}) \S+ \S+ \"(?P<method>[A-Z]+) (?P<uri>\S+)"
)


def dropped_prediction(line: str) -> bool:
    """A /predict/ request whose client left before HAProxy reached a replica."""
    match = HTTP_LOG.search(line)
    if match is None or match["method"] != "POST":
        return False
    path = match["uri"].split("?", 1)[0]
    return path in PREDICT_PATHS and match["state"][0] == "C" and match["connect"] == "-1"


class HAProxyLog:
    """A datagram socket HAProxy logs to, and a thread that calls `dropped` once per
    prediction dropped before a replica saw it."""

    def __init__(self, path: Path, dropped: Callable[[], None]) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.5)
        self._dropped = dropped
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, name="haproxy-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join()
        self._socket.close()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                line = self._socket.recv(65536).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return
            if dropped_prediction(line):
                self._dropped()
