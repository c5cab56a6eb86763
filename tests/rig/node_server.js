// node's http2 module as a rig server (started by tests/rig/node.py).
//
// Usage: node node_server.js CONFIG.json, where CONFIG holds {docroot, key, cert, limit,
// ports: {tls, h2c, tls_limited, h2c_limited}}. Four listeners on 127.0.0.1:
//   tls          http2.createSecureServer with allowHTTP1: ALPN h2 and http/1.1
//   h2c          http2.createServer: HTTP/2 by prior knowledge
//   *_limited    the same, ending each connection after `limit` requests: HTTP/2 by a
//                graceful GOAWAY (session.close()), HTTP/1.1 by "Connection: close"
// Routes: GET /<name> serves the docroot's file; POST /upload replies "<count> <sha256 hex>" of
// the request body; anything else is 404.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http2 = require("http2");
const path = require("path");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const files = new Map();
for (const name of fs.readdirSync(config.docroot)) {
  files.set("/" + name, fs.readFileSync(path.join(config.docroot, name)));
}

// Requests served so far per HTTP/2 session or HTTP/1.1 socket (limited listeners only).
const served = new WeakMap();

function countRequest(req, res) {
  const owner = req.httpVersionMajor === 2 ? req.stream.session : req.socket;
  const count = (served.get(owner) || 0) + 1;
  served.set(owner, count);
  if (count < config.limit) {
    return;
  }
  if (req.httpVersionMajor === 2) {
    // GOAWAY naming this stream as the last one: it completes, later ones go elsewhere.
    owner.close();
  } else {
    res.setHeader("connection", "close");
  }
}

function handler(limited) {
  return (req, res) => {
    if (limited) {
      countRequest(req, res);
    }
    if (req.url === "/upload" && req.method === "POST") {
      const digest = crypto.createHash("sha256");
      let count = 0;
      req.on("data", (chunk) => {
        count += chunk.length;
        digest.update(chunk);
      });
      req.on("end", () => {
        const body = `${count} ${digest.digest("hex")}`;
        res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
        res.end(body);
      });
      return;
    }
    const body = files.get(req.url);
    if (req.method !== "GET" || body === undefined) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length });
    res.end(body);
  };
}

const tls = { key: fs.readFileSync(config.key), cert: fs.readFileSync(config.cert), allowHTTP1: true };
const servers = [
  http2.createSecureServer(tls, handler(false)).listen(config.ports.tls, "127.0.0.1"),
  http2.createServer(handler(false)).listen(config.ports.h2c, "127.0.0.1"),
  http2.createSecureServer(tls, handler(true)).listen(config.ports.tls_limited, "127.0.0.1"),
  http2.createServer(handler(true)).listen(config.ports.h2c_limited, "127.0.0.1"),
];
for (const server of servers) {
  server.on("error", (error) => {
    // EADDRINUSE ("address already in use": the rig retries on other ports) and the like.
    console.error(`listen failed: ${error.message}`);
    process.exit(1);
  });
}

process.on("SIGTERM", () => process.exit(0));
