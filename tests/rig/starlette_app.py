"""A Starlette application for the request-body and line-streaming tests, served by hypercorn.

Real parsers for what the client sends, and the streams LLM APIs answer with:

* ``POST /form`` -- Starlette's ``request.form()`` (python-multipart underneath; files spooled
  to disk past 1 MB): JSON ``{"content_type": ..., "fields": [[name, entry]...]}``, an entry
  being ``{"value": str}`` or ``{"filename", "content_type", "size", "sha256", "headers"}``
* ``POST /multipart-digest`` -- python-multipart's streaming parser over ``request.stream()``,
  nothing stored: JSON ``[[disposition, size, sha256]...]`` per part (for large uploads)
* ``GET /sse?events=N&eol=lf|crlf|cr&forever=1`` -- ``text/event-stream``: N events
  ``data: {"n": i}`` (``forever=1``: one every 20 ms until the client goes, at most 60 s),
  each event written in two pieces split inside its line end
* ``GET /ndjson?n=N`` -- ``application/x-ndjson``, N JSON lines
* ``GET /proxy?to=URL&background=0|1`` -- the body of ``GET URL`` streamed through an aiopool
  client owned by the app (``StreamContext.open()``), as the docs show; ``background=0``
  leaves out the ``BackgroundTask(upstream.aclose)``, so only the iterator releases it
* ``GET /proxy-stats`` -- JSON ``{"active", "idle", "sse_running"}``: the app client's leased
  and idle sockets, and /sse streams still running
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import trustme
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import aiopool

__all__ = ["BodiesApp"]

_EOL = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}
_FOREVER_LIMIT = 3000  # events: 60 s at 20 ms, so a stream nobody ends still ends


class BodiesApp:
    """The app, with its own aiopool client (made at startup, closed at shutdown)."""

    def __init__(self, ca: trustme.CA) -> None:
        self._ca = ca
        self.client: aiopool.Client | None = None
        self.sse_running = 0
        self.starlette = Starlette(
            routes=[
                Route("/form", self._form, methods=["POST"]),
                Route("/multipart-digest", self._digest, methods=["POST"]),
                Route("/sse", self._sse),
                Route("/ndjson", self._ndjson),
                Route("/proxy", self._proxy),
                Route("/proxy-stats", self._proxy_stats),
            ]
        )

    async def startup(self) -> None:
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        self.client = aiopool.Client(verify=context)

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def _form(self, request: Request) -> Response:
        fields: list[list[Any]] = []
        async with request.form(max_part_size=64 * 1024 * 1024) as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    digest, size = hashlib.sha256(), 0
                    while chunk := await value.read(1024 * 1024):
                        digest.update(chunk)
                        size += len(chunk)
                    entry: dict[str, Any] = {
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "size": size,
                        "sha256": digest.hexdigest(),
                        "headers": [[k, v] for k, v in value.headers.items()],
                    }
                else:
                    entry = {"value": value}
                fields.append([name, entry])
        return JSONResponse({"content_type": request.headers.get("content-type"), "fields": fields})

    async def _digest(self, request: Request) -> Response:
        _, params = parse_options_header(request.headers["content-type"])
        parts: list[list[Any]] = []
        state: dict[str, Any] = {}
        header: list[bytes] = [b"", b""]

        def on_part_begin() -> None:
            state.update(disposition="", size=0, digest=hashlib.sha256())

        def on_header_field(data: bytes, start: int, end: int) -> None:
            header[0] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            header[1] += data[start:end]

        def on_header_end() -> None:
            if header[0].lower() == b"content-disposition":
                state["disposition"] = header[1].decode("utf-8")
            header[0] = header[1] = b""

        def on_part_data(data: bytes, start: int, end: int) -> None:
            state["size"] += end - start
            state["digest"].update(data[start:end])

        def on_part_end() -> None:
            parts.append([state["disposition"], state["size"], state["digest"].hexdigest()])

        parser = MultipartParser(
            params[b"boundary"],
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
        return JSONResponse(parts)

    async def _sse(self, request: Request) -> Response:
        eol = _EOL[request.query_params.get("eol", "lf")]
        forever = request.query_params.get("forever") == "1"
        count = _FOREVER_LIMIT if forever else int(request.query_params.get("events", "3"))

        async def events() -> AsyncIterator[str]:
            self.sse_running += 1
            try:
                yield f": a comment line{eol}{eol}"
                for n in range(count):
                    # Split inside the line end: a CRLF arrives as CR, then LF.
                    line = f"data: {json.dumps({'n': n})}{eol}{eol}"
                    yield line[:-1]
                    yield line[-1:]
                    if forever:
                        await asyncio.sleep(0.02)
                    else:
                        await asyncio.sleep(0)
                yield f"data: [DONE]{eol}{eol}"
            finally:
                self.sse_running -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _ndjson(self, request: Request) -> Response:
        count = int(request.query_params.get("n", "3"))

        async def lines() -> AsyncIterator[bytes]:
            for n in range(count):
                yield json.dumps({"n": n, "text": "é" * (n % 5)}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def _proxy(self, request: Request) -> Response:
        assert self.client is not None
        upstream = await self.client.stream("GET", request.query_params["to"]).open()
        background = None
        if request.query_params.get("background", "1") == "1":
            background = BackgroundTask(upstream.aclose)
        return StreamingResponse(
            upstream.aiter_bytes(),
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
            background=background,
        )

    async def _proxy_stats(self, request: Request) -> Response:
        assert self.client is not None
        hosts = self.client.stats().hosts.values()
        return JSONResponse(
            {
                "active": sum(host.active for host in hosts),
                "idle": sum(host.idle for host in hosts),
                "sse_running": self.sse_running,
            }
        )
