"""A layer-4 load balancer's logic, without sockets: backends, balancing, health, the PROXY header.

`examples/proxy.py` is the evio glue and the command line.
"""

from .balance import POLICIES, Backend, Balancer, parse_backend
from .proxyheader import proxy_header_v1, proxy_header_v2

__all__ = ["POLICIES", "Backend", "Balancer", "parse_backend", "proxy_header_v1", "proxy_header_v2"]
