"""`Resolver`: host names looked up on worker threads, so the loop never blocks on DNS.

`getaddrinfo` cannot be interrupted, so the workers are daemon threads: a
look-up that hangs when `serve` returns does not hold the process up. They
start on the first look-up (a server that never dials by name starts none)
and exit when `close` asks, each after its current look-up.
"""

from __future__ import annotations

import queue
import socket
import threading
from typing import Any, Callable, List, Optional, Tuple

#: What `getaddrinfo` answers: (family, type, proto, canonname, sockaddr) tuples.
AddrInfo = List[Tuple[Any, ...]]
#: Called on a worker thread with the answer, or with the `OSError` that stands for it.
Done = Callable[[Optional[AddrInfo], Optional[OSError]], None]

#: Look-ups that run at once, at most.
WORKERS = 4
#: How long `close` waits for workers that are in the middle of a look-up.
CLOSE_WAIT = 1.0


class Resolver:
    """A small pool of threads running `getaddrinfo`."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Tuple[str, int, int, Done] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def resolve(self, host: str, port: int, family: int, done: Done) -> None:
        """Look `host` up for TCP on `port`, in `family` (or `AF_UNSPEC`), and call `done` with the answer."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the resolver is closed")
            if self._idle == 0 and len(self._threads) < WORKERS:
                thread = threading.Thread(target=self._work, name="evio-resolver", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put((host, port, family, done))

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1  # a worker waiting for a job: the next look-up needs no new thread
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if job is None:
                return
            host, port, family, done = job
            try:
                infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
            except OSError as err:
                done(None, err)
            except UnicodeError as err:  # the idna codec refuses some names before any look-up
                done(None, socket.gaierror(socket.EAI_NONAME, str(err)))
            else:
                done(infos, None)

    def close(self) -> None:
        """Ask every worker to exit after its current look-up; wait for them a little."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(CLOSE_WAIT / len(threads))
