"""caddy (Go's net/http and x/net/http2 underneath) from a generated JSON config.

The admin endpoint is off, automatic HTTPS is off (no ACME, no network: the certificate is the
rig's, loaded from files), and HOME and the XDG directories point into the prefix, so caddy
writes nothing outside it. caddy cannot consume a request body itself, so ``/upload`` is
reverse-proxied to a hypercorn backend that replies ``<count> <sha256>``.
"""

from __future__ import annotations

import json
from typing import Any

import trustme

from ._process import Docroot, Endpoint, ProcessServer, endpoints_for
from .hypercorn_app import HypercornServer

__all__ = ["Caddy"]


class Caddy(ProcessServer):
    """caddy on two ports: TLS (ALPN h2, http/1.1) and cleartext (h2c by prior knowledge,
    HTTP/1.1). Serves the docroot's files at ``/<name>`` and ``/upload`` (POST, proxied).

    Go's HTTP servers have no requests-per-connection limit, so there is no limited listener.
    """

    BINARY = "caddy"
    PORTS = 2

    def __init__(self, ca: trustme.CA, docroot: Docroot) -> None:
        super().__init__(ca, docroot)
        self._backend: HypercornServer | None = None

    def endpoints(self) -> dict[str, Endpoint]:
        tls, h2c = self.ports
        return endpoints_for(tls, h2c, "count-sha256")

    def start(self) -> None:
        self._backend = HypercornServer(tls=False)
        self._backend.start()
        try:
            super().start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        super().stop()
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.stop()

    def _environment(self) -> dict[str, str]:
        environment = super()._environment()
        home = str(self.prefix)
        environment.update(
            HOME=home, XDG_DATA_HOME=f"{home}/data", XDG_CONFIG_HOME=f"{home}/config"
        )
        return environment

    def _configure(self, binary: str) -> list[list[str]]:
        assert self._backend is not None
        tls, h2c = self.ports
        routes: list[dict[str, Any]] = [
            {
                "match": [{"path": ["/upload"]}],
                "handle": [
                    {
                        "handler": "reverse_proxy",
                        "upstreams": [{"dial": f"127.0.0.1:{self._backend.port}"}],
                    }
                ],
            },
            {"handle": [{"handler": "file_server", "root": str(self.docroot.path)}]},
        ]
        config = {
            "admin": {"disabled": True},
            "storage": {"module": "file_system", "root": str(self.prefix / "storage")},
            "logging": {
                "logs": {
                    "default": {
                        "level": "WARN",
                        "writer": {"output": "file", "filename": str(self.prefix / "caddy.log")},
                    }
                }
            },
            "apps": {
                "http": {
                    "servers": {
                        "tls": {
                            "listen": [f"127.0.0.1:{tls}"],
                            "routes": routes,
                            "protocols": ["h1", "h2"],
                            "tls_connection_policies": [
                                {"certificate_selection": {"any_tag": ["rig"]}}
                            ],
                            "automatic_https": {"disable": True},
                        },
                        "h2c": {
                            "listen": [f"127.0.0.1:{h2c}"],
                            "routes": routes,
                            "protocols": ["h1", "h2c"],
                            "automatic_https": {"disable": True},
                        },
                    }
                },
                "tls": {
                    "certificates": {
                        "load_files": [
                            {
                                "certificate": str(self.chain_path),
                                "key": str(self.key_path),
                                "tags": ["rig"],
                            }
                        ]
                    }
                },
            },
        }
        path = self.prefix / "caddy.json"
        path.write_text(json.dumps(config, indent=2))
        return [[binary, "run", "--config", str(path)]]
