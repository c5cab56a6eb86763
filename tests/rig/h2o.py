"""h2o from a generated YAML config: TLS (ALPN h2, http/1.1) and cleartext (h2c, HTTP/1.1).

h2o has no requests-per-connection limit (only concurrency and timeouts), so there is no
limited listener. ``/upload`` is an mruby handler that sends the request body back, so the
client can compare every byte; h2o's mruby has no digest to reply with a hash instead.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

from ._process import Endpoint, ProcessServer, endpoints_for

__all__ = ["H2o"]

# Rack-style handler: env["rack.input"] is the whole request body once h2o has received it.
_ECHO: Final = """\
Proc.new do |env|
  body = env["rack.input"] ? env["rack.input"].read : ""
  [200, {"content-type" => "application/octet-stream"}, [body]]
end
"""


class H2o(ProcessServer):
    """h2o on two ports. Serves the docroot's files at ``/<name>`` and ``/upload`` (POST;
    echoes the body)."""

    BINARY = "h2o"
    PORTS = 2

    def endpoints(self) -> dict[str, Endpoint]:
        tls, h2c = self.ports
        return endpoints_for(tls, h2c, "echo")

    def _configure(self, binary: str) -> list[list[str]]:
        tls, h2c = self.ports
        paths = {"/upload": {"mruby.handler": _ECHO}, "/": {"file.dir": str(self.docroot.path)}}
        certificate = {
            "certificate-file": str(self.chain_path),
            "key-file": str(self.key_path),
            # The rig's certificate names no OCSP responder; do not try to fetch one.
            "ocsp-update-interval": 0,
        }
        config: dict[str, Any] = {
            "pid-file": str(self.prefix / "h2o.pid"),
            "error-log": str(self.prefix / "error.log"),
            "num-threads": 2,
            # A listener per host: h2o serves a listener's first host when none matches the
            # request's authority.
            "hosts": {
                f"localhost:{tls}": {
                    "listen": {"host": "127.0.0.1", "port": tls, "ssl": certificate},
                    "paths": paths,
                },
                f"127.0.0.1:{h2c}": {"listen": {"host": "127.0.0.1", "port": h2c}, "paths": paths},
            },
        }
        if os.geteuid() == 0:
            # As root h2o would switch to "nobody", who cannot write the pid file here.
            config["user"] = "root"
        path = self.prefix / "h2o.conf"
        # JSON is YAML: json.dumps quotes every path and string safely.
        path.write_text(json.dumps(config, indent=2))
        return [[binary, "-c", str(path)]]
