"""`InputStream`: keeps the unprocessed tail of a packet for the next `data` event."""

from __future__ import annotations


class InputStream:
    """A helper for protocols whose messages span several packets.

    In `Events.data`, call `begin(packet)` to get what was kept plus the new
    packet, process what is complete, then `end(rest)` with the unprocessed
    tail of what `begin` returned.

    The cost is linear in the bytes received, however many packets a message
    spans: kept bytes live in one growing `bytearray` that `begin` extends
    in place, and `end` with nothing consumed keeps it as it is (a message of
    8 MiB in 64 KiB packets is copied once, not 128 times).
    """

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept = bytearray()

    def begin(self, packet: bytes | bytearray | memoryview | None) -> bytes | bytearray:
        """Return the kept bytes followed by `packet` (`None` adds nothing).

        With nothing kept, that is `packet` itself as `bytes` (copied only if
        it was not `bytes`). Otherwise it is the stream's own buffer, extended
        in place: valid until the next `begin` or `end`, and not to be resized.
        """
        kept = self._kept
        if not kept:
            if not packet:
                return b""
            return packet if type(packet) is bytes else bytes(packet)
        if packet:
            try:
                kept += packet
            except BufferError:  # the caller still holds a view of the buffer: leave it to them, grow a copy
                self._kept = kept = kept + packet
        return kept

    def end(self, rest: bytes | bytearray | memoryview | None) -> None:
        """Keep `rest`, the unprocessed tail of what `begin` returned, for the next `begin`.

        A tail as long as what is kept means nothing was consumed, and costs
        nothing; any other tail is copied.
        """
        if not rest:
            self._kept = bytearray()
        elif not self._kept or len(rest) != len(self._kept):
            self._kept = bytearray(rest)

    def __len__(self) -> int:
        return len(self._kept)
