"""`InputStream`: keeps the unprocessed tail of a packet for the next `data` event."""

from __future__ import annotations


class InputStream:
    """A helper for protocols whose messages span several packets.

    In `Events.data`, call `begin(packet)` to get what was kept plus the new
    packet, process what is complete, then `end(rest)` with what is not.
    """

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept = b""

    def begin(self, packet: bytes | bytearray | memoryview | None) -> bytes:
        """Return the kept bytes followed by `packet` (`None` adds nothing)."""
        kept = self._kept
        if not packet:
            return kept
        if not kept:
            return packet if type(packet) is bytes else bytes(packet)
        return kept + packet

    def end(self, rest: bytes | bytearray | memoryview | None) -> None:
        """Keep `rest` (a copy, when it is mutable) for the next `begin`."""
        self._kept = bytes(rest) if rest else b""

    def __len__(self) -> int:
        return len(self._kept)
