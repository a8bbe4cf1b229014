"""The backends: readiness pollers behind one interface, `Poller`, in epoll's terms.

`EpollPoller` calls `select.epoll` directly (Linux). `SelectorPoller` is the
portable one, over `selectors.DefaultSelector` (kqueue on BSD and macOS, poll
or select elsewhere). Both take and report epoll's event bits, so the loop
has one code path for both.
"""

from __future__ import annotations

import select
import selectors
from typing import List, Protocol, Tuple

#: Readiness bits, numbered as epoll numbers them on every platform.
IN = 0x001
OUT = 0x004
ERR = 0x008 | 0x010  # EPOLLERR | EPOLLHUP: reported whether asked for or not

Ready = List[Tuple[int, int]]


class Poller(Protocol):
    """What the loop needs of a backend: level-triggered readiness of descriptors.

    A descriptor is registered with a non-empty mask of `IN` and `OUT`; the
    loop unregisters it rather than asking for nothing, since epoll would
    still report errors and hang-ups of a descriptor nobody reads.
    """

    name: str

    def poll(self, timeout: float = -1) -> Ready:
        """Wait up to `timeout` seconds (-1: no limit) and return `(fd, bits)` for what is ready."""
        ...

    def register(self, fd: int, mask: int) -> None: ...

    def modify(self, fd: int, mask: int) -> None: ...

    def unregister(self, fd: int) -> None: ...

    def discard(self, fd: int) -> None:
        """Forget `fd`, which the caller is about to close."""
        ...

    def close(self) -> None: ...


class EpollPoller:
    """Level-triggered `select.epoll`, used as it is."""

    name = "epoll"

    def __init__(self) -> None:
        ep = select.epoll()
        self._ep = ep
        # Bound once: the loop calls poll(timeout) with -1 for "no timeout",
        # which PyPy needs (its epoll.poll refuses None).
        self.poll = ep.poll
        self.register = ep.register
        self.modify = ep.modify
        self.unregister = ep.unregister

    def discard(self, fd: int) -> None:
        """Nothing to do: epoll drops a descriptor by itself once it is closed (the loop never dups one)."""

    def close(self) -> None:
        self._ep.close()


class SelectorPoller:
    """The portable backend: `selectors.DefaultSelector` behind epoll's interface."""

    name = "portable"

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    def poll(self, timeout: float = -1) -> Ready:
        ready = self._sel.select(None if timeout < 0 else timeout)
        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        return [(key.fd, (IN if mask & read else 0) | (OUT if mask & write else 0)) for key, mask in ready]

    def register(self, fd: int, mask: int) -> None:
        self._sel.register(fd, _selector_mask(mask))

    def modify(self, fd: int, mask: int) -> None:
        self._sel.modify(fd, _selector_mask(mask))

    def unregister(self, fd: int) -> None:
        self._sel.unregister(fd)

    def discard(self, fd: int) -> None:
        # The selector keeps a map of its own, which a closed descriptor must leave.
        self._sel.unregister(fd)

    def close(self) -> None:
        self._sel.close()


def _selector_mask(mask: int) -> int:
    return (selectors.EVENT_READ if mask & IN else 0) | (selectors.EVENT_WRITE if mask & OUT else 0)


def make_poller(portable: bool) -> Poller:
    """epoll where the OS has it, unless `portable` asks for the selectors backend."""
    if not portable and hasattr(select, "epoll"):
        return EpollPoller()
    return SelectorPoller()
