"""node's http2 module (``node_server.js`` beside this file): TLS with ALPN h2 and http/1.1, h2c."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from ._process import Endpoint, ProcessServer, endpoints_for

__all__ = ["LIMIT", "Node"]

_SCRIPT: Final = Path(__file__).with_name("node_server.js")
# Requests per connection on the limited listeners (see node_server.js).
LIMIT: Final = 20


class Node(ProcessServer):
    """node on four ports: TLS (ALPN h2, http/1.1), h2c, and both again ending each connection
    after ``LIMIT`` requests. Serves the docroot's files at ``/<name>`` and ``/upload`` (POST;
    replies ``<count> <sha256>`` of the body)."""

    BINARY = "node"
    PORTS = 4
    LIMITED = ("h1-tls", "h2-tls", "h2c")

    def endpoints(self) -> dict[str, Endpoint]:
        tls, h2c, tls_limited, h2c_limited = self.ports
        limited = {
            "h1-tls": f"https://localhost:{tls_limited}",
            "h2-tls": f"https://localhost:{tls_limited}",
            "h2c": f"http://127.0.0.1:{h2c_limited}",
        }
        return endpoints_for(tls, h2c, "count-sha256", limited=limited, limit=LIMIT)

    def _configure(self, binary: str) -> list[list[str]]:
        tls, h2c, tls_limited, h2c_limited = self.ports
        config = {
            "docroot": str(self.docroot.path),
            "key": str(self.key_path),
            "cert": str(self.chain_path),
            "limit": LIMIT,
            "ports": {
                "tls": tls,
                "h2c": h2c,
                "tls_limited": tls_limited,
                "h2c_limited": h2c_limited,
            },
        }
        path = self.prefix / "config.json"
        path.write_text(json.dumps(config, indent=2))
        return [[binary, str(_SCRIPT), str(path)]]
