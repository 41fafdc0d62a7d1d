"""{{name}}: a wasi:http component in Python — a router, a JSON endpoint and a streamed echo."""

import json
from urllib.parse import parse_qs, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# wasi:io's blocking writes take at most 4096 bytes at a time.
WRITE_CHUNK = 4096


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        url = urlsplit(request.path_with_query() or "/")
        method = request.method()
        if isinstance(method, Method_Get) and url.path == "/":
            respond(response_out, 200, "text/plain; charset=utf-8", b"Hello from {{name}}!\n")
        elif isinstance(method, Method_Get) and url.path == "/api/hello":
            name = parse_qs(url.query).get("name", ["world"])[0]
            body = json.dumps({"greeting": f"Hello, {name}!"}, ensure_ascii=False) + "\n"
            respond(response_out, 200, "application/json", body.encode())
        elif isinstance(method, Method_Post) and url.path == "/echo":
            echo(request, response_out)
        else:
            respond(response_out, 404, "text/plain; charset=utf-8", b"Not Found\n")


def respond(response_out: ResponseOutparam, status: int, content_type: str, body: bytes) -> None:
    response = OutgoingResponse(Fields.from_list([
        ("content-type", content_type.encode()),
        ("content-length", str(len(body)).encode()),
    ]))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    write_all(outgoing, [body])


def echo(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    """Copies the request body to the response as it arrives: nothing is held whole."""
    response = OutgoingResponse(Fields.from_list([("content-type", b"application/octet-stream")]))
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    incoming = request.consume()
    stream = incoming.stream()

    def chunks():
        while True:
            try:
                yield stream.blocking_read(65536)
            except Err:
                return  # the body has ended

    write_all(outgoing, chunks())
    stream.__exit__(None, None, None)


def write_all(outgoing: OutgoingBody, chunks) -> None:
    with outgoing.write() as out:
        for chunk in chunks:
            for start in range(0, len(chunk), WRITE_CHUNK):
                out.blocking_write_and_flush(chunk[start:start + WRITE_CHUNK])
    OutgoingBody.finish(outgoing, None)
