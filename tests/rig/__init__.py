"""Real servers for the test suite: a fault-injecting HTTP/1.1 server, a silent server, nginx.

Nothing here imports aiopool, so the rig can be trusted while the library changes. Tests get
these through the fixtures in tests/conftest.py; import from here to run a private instance.
"""

from .fault_server import BlackholeServer, FaultServer, pattern, server_ssl_context
from .nginx import STATIC_FILES, Nginx, NginxError, find_nginx

__all__ = [
    "STATIC_FILES",
    "BlackholeServer",
    "FaultServer",
    "Nginx",
    "NginxError",
    "find_nginx",
    "pattern",
    "server_ssl_context",
]
