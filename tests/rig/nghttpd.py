"""nghttpd, nghttp2's reference HTTP/2 server: h2 over TLS and h2c, serving a docroot.

nghttpd takes one port per process, so this runs two: one with the rig's key and certificate
(ALPN h2 only: it speaks no HTTP/1.1) and one with ``--no-tls``. ``--echo-upload`` makes it send
a POST body back, so the client can compare every byte it uploaded. It has no
requests-per-connection limit, so there is no limited listener.
"""

from __future__ import annotations

from ._process import Endpoint, ProcessServer, endpoints_for

__all__ = ["Nghttpd"]


class Nghttpd(ProcessServer):
    """nghttpd on two ports: TLS (h2) and h2c. Serves the docroot's files at ``/<name>``;
    ``POST /upload`` echoes the body."""

    BINARY = "nghttpd"
    PORTS = 2
    PROTOCOLS = ("h2-tls", "h2c")

    def endpoints(self) -> dict[str, Endpoint]:
        tls, h2c = self.ports
        return endpoints_for(tls, h2c, "echo", http1=False)

    def _configure(self, binary: str) -> list[list[str]]:
        tls, h2c = self.ports
        common = ["--address=127.0.0.1", f"--htdocs={self.docroot.path}", "--echo-upload"]
        return [
            [binary, *common, str(tls), str(self.key_path), str(self.chain_path)],
            [binary, *common, "--no-tls", str(h2c)],
        ]
