"""A Redis clone as sans-I/O parts, served by evio in `examples/redis_server.py`.

- `resp`: request parsers (pure Python, and hiredis-backed where installed).
- `store`: the keyspace, with expiry.
- `aof`: the append-only file.
- `commands`: the commands on the keyspace, and the shared `Database`.
- `protocol`: `RedisProtocol`, one connection: bytes in, replies and a verdict out.
"""

from .aof import AOFError, AppendOnlyFile
from .commands import Database
from .protocol import CLOSE, KEEP, SHUTDOWN, RedisProtocol
from .resp import HiredisReader, PureReader, make_reader

__all__ = [
    "CLOSE",
    "KEEP",
    "SHUTDOWN",
    "AOFError",
    "AppendOnlyFile",
    "Database",
    "HiredisReader",
    "PureReader",
    "RedisProtocol",
    "make_reader",
]
