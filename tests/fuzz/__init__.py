"""Property-based fuzzing of the response parsers through the real client.

Hypothesis generates well-formed HTTP/1.1 responses and HTTP/2 frame sequences, mutates them
(byte flips, inserted CR/LF/NUL/high bytes, truncation, conflicting framing, bad lengths, bad
HPACK, random frames...) and a raw asyncio server in the test's own event loop answers a real
`aiopool.Client` with them. Every case checks the same properties (see `harness`):

- only `aiopool.AiopoolError` subclasses escape; anything else is a bug;
- nothing hangs past its timeout (an outer bound a little above the client's read timeout);
- the pool settles: no active, connecting or waiting lease, no open HTTP/2 stream;
- a broken socket is never reused: after a failure, or after a response with bytes trailing it,
  the next request does not get that socket; and whatever socket it gets answers it exactly;
- a well-formed response is parsed exactly (status, reason, headers, body) and its socket reused
  exactly when HTTP says it may be.

Modules: `mutations` (byte-level mutations and write boundaries, shared), `http11` and `http2`
(strategies), `servers` (the raw servers), `harness` (one event loop and server per test, the
properties, and the two HTTP/1.1 parsers compared), `differential` (the HTTP/2 engines compared:
h2 against native), `profiles` (the bounded "ci" profile and the long "fuzz" one) and
`__main__` (the campaign behind `make fuzz`).
"""
