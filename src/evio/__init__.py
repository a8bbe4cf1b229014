"""evio: a small, fast, event-driven networking framework.

One entry point, `serve(events, *addrs)`, and eight events, all run on the
thread that called `serve`. See `Events` for what fires when, `Conn` and
`Server` for the handles that any event or thread can use.
"""

from .conn import Conn, SockAddr
from .events import Action, DataResult, Events, OpenedResult, Options, Out, TickResult
from .loop import serve
from .server import Server
from .stream import InputStream
from .timers import Timer

__version__ = "0.3.0"

__all__ = [
    "Action",
    "Conn",
    "DataResult",
    "Events",
    "InputStream",
    "OpenedResult",
    "Options",
    "Out",
    "Server",
    "SockAddr",
    "TickResult",
    "Timer",
    "__version__",
    "serve",
]
