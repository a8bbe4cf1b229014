"""evio: a small, fast, event-driven networking framework.

One entry point, `serve(events, *addrs)`, and eight events, all run on the
thread that called `serve`. See `Events` for what fires when.
"""

from .conn import Conn, Server
from .events import Action, Events, Options
from .loop import serve
from .stream import InputStream

__version__ = "0.1.0"

__all__ = ["Action", "Conn", "Events", "InputStream", "Options", "Server", "__version__", "serve"]
