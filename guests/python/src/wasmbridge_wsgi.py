"""The WSGI gateway of python.wasm (PEP 3333): `python.wasm --wsgi MODULE:CALLABLE`.

In a fresh instance it serves the one request of its CGI environment (meta-variables in
os.environ, the body on stdin, the response on stdout). In a CGI worker (WASMBRIDGE_FASTCGI
set: `wasmbridge serve --wsgi`, `WasmWSGI`) it imports the app once and serves request after
request as FastCGI records on the worker channel (`_wasmbridge`), which no file descriptor
reaches: what the app prints goes to the server's log, never to a client.

An exception that escapes the app answers 500 (the traceback goes to the log only); in a
worker it also ends the worker, so that the next request gets a fresh one. After part of the
response went out, the instance aborts, so that the server cuts the response rather than
ending it as if it were whole.
"""

import importlib
import io
import os
import re
import struct
import sys
import traceback

__all__ = ["main", "load", "warm"]

# FastCGI 1.0, as the host speaks it: one request at a time, always id 1.
_BEGIN_REQUEST, _END_REQUEST, _PARAMS, _STDIN, _STDOUT, _STDERR = 1, 3, 4, 5, 6, 7
_HEADER = struct.Struct(">BBHHBx")
_MAX_CONTENT = 0xFFFF

# What start_response accepts: a status with its reason, token header names, values without
# control characters (a CR or LF would let the app forge headers).
_STATUS = re.compile(r"[1-9][0-9][0-9] [^\x00-\x1f\x7f]+\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*\Z")


def load(spec):
    """The callable `spec` names: MODULE:CALLABLE (dots in CALLABLE reach attributes), or
    MODULE alone for its `application`, as mod_wsgi and gunicorn find it."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise ValueError(f"{spec!r} names no module (MODULE:CALLABLE)")
    app = importlib.import_module(module_name)
    for name in (attribute or "application").split("."):
        app = getattr(app, name)
    if not callable(app):
        raise TypeError(f"{spec} is not callable")
    return app


def warm(specs):
    """Imports each MODULE or MODULE:CALLABLE of `specs` (spaces or commas between them) for
    a snapshot (`wasmbridge wizer --init-func wasmbridge-warm`)."""
    names = specs.replace(",", " ").split()
    for spec in names:
        if ":" in spec:
            load(spec)
        else:
            importlib.import_module(spec)
    print(f"wasmbridge-warm: {len(names)} imported, {len(sys.modules)} modules in the snapshot",
          file=sys.stderr)


def main(spec):
    """Serves `spec`'s app; returns the exit status."""
    try:
        app = load(spec)
    except BaseException:
        sys.stderr.write(f"wasmbridge: cannot load the WSGI app {spec}:\n")
        traceback.print_exc()
        return 1
    # The server's start-up check: the app imports, nothing more.
    if os.environ.get("WASMBRIDGE_WSGI_CHECK"):
        return 0
    if os.environ.get("WASMBRIDGE_FASTCGI"):
        return _serve_worker(app)
    return _serve_cgi(app)


def _serve_cgi(app):
    # Meta-variables were bytes; PEP 3333 wants them as latin-1 strings ("bytes as str").
    encoding = sys.getfilesystemencoding()
    environ = {
        name: value.encode(encoding, "surrogateescape").decode("latin-1")
        for name, value in os.environ.items()
    }
    environ.pop("WASMBRIDGE_FASTCGI", None)
    # Without a length (a chunked body), the body is all of stdin: the server ends it.
    length = _content_length(environ)
    stdin = io.BufferedReader(_LimitedReader(sys.stdin.buffer, length), 64 * 1024)
    stdout = sys.stdout.buffer
    response = _Response(stdout.write, stdout.flush)
    # The response is stdout's: what the app prints goes to the log, as in a worker.
    sys.stdout = sys.stderr
    failed = _call(app, environ, stdin, sys.stderr, response, run_once=True)
    stdout.flush()
    return 1 if failed else 0


def _serve_worker(app):
    import _wasmbridge

    channel = _Channel(_wasmbridge.read, _wasmbridge.write)
    while True:
        params = channel.request()
        if params is None:
            return 0
        stdin = io.BufferedReader(_Stdin(channel), 64 * 1024)
        errors = _ErrorStream(channel)
        response = _Response(lambda data: channel.send(_STDOUT, data), lambda: None)
        # What the app writes to sys.stderr is logged with the request it served.
        sys.stderr, stderr = errors, sys.stderr
        try:
            failed = _call(app, params, stdin, errors, response, run_once=False)
        finally:
            sys.stderr = stderr
        # The host sends the whole body; what the app left unread (or closed) is read from
        # the channel and dropped, so that the next request starts at its own records.
        while channel.stdin():
            pass
        errors.flush()
        channel.send(_END_REQUEST, struct.pack(">IB3x", 0, 0))
        if failed:
            # Its state may be what made it fail: a new worker serves the next request.
            return 1


def _call(app, environ, stdin, errors, response, run_once):
    """Runs the app for one request; True when it raised. The response has gone out when
    this returns."""
    environ.update({
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": _scheme(environ),
        "wsgi.input": stdin,
        "wsgi.errors": errors,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": run_once,
        "wsgi.file_wrapper": _FileWrapper,
    })
    _split_mount(environ)
    result = None
    try:
        result = app(environ, response.start_response)
        for chunk in result:
            response.write(chunk)
        response.finish()
        return False
    except BaseException:
        where = f"{environ.get('REQUEST_METHOD', '')} {environ.get('REQUEST_URI', environ.get('PATH_INFO', ''))}"
        errors.write(f"wasmbridge: the WSGI app raised an exception for {where}:\n")
        traceback.print_exc(file=errors)
        if response.sent:
            # Part of the response is out: abort, so that the server cuts it.
            errors.flush()
            os.abort()
        response.fail()
        return True
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            try:
                close()
            except BaseException:
                errors.write("wasmbridge: the WSGI app's close() raised an exception:\n")
                traceback.print_exc(file=errors)
        errors.flush()


def _scheme(environ):
    if environ.get("HTTPS", "").lower() in ("on", "1", "yes"):
        return "https"
    return environ.get("REQUEST_SCHEME") or "http"


def _split_mount(environ):
    """SCRIPT_NAME is where the app is mounted and PATH_INFO the rest of the path. A front end
    that cannot tell (Apache's <Location>) names the mount in WASMBRIDGE_WSGI_MOUNT (a variable
    granted to the instance, not a request's)."""
    mount = os.environ.get("WASMBRIDGE_WSGI_MOUNT")
    if mount is None:
        return
    mount = mount.rstrip("/")
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path == mount or path.startswith(mount + "/"):
        environ["SCRIPT_NAME"] = mount
        environ["PATH_INFO"] = path[len(mount):]


def _content_length(environ):
    """CONTENT_LENGTH, or None when the request does not say."""
    try:
        return max(0, int(environ["CONTENT_LENGTH"]))
    except (KeyError, ValueError):
        return None


class _Response:
    """start_response and the body, as CGI output: a Status line and headers, then data. The
    head goes out with the first non-empty piece of the body (or at the end), as PEP 3333
    asks, so that an error before it can still answer 500."""

    def __init__(self, write, flush):
        self._write = write
        self._flush = flush
        self._head = None
        self.sent = False

    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._head is not None:
            raise AssertionError("start_response was already called")
        if not isinstance(status, str) or not _STATUS.match(status):
            raise ValueError(f"status {status!r} is not 'NNN Reason'")
        lines = [f"Status: {status}\r\n"]
        for name, value in headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"header {name!r}: {value!r} is not a pair of strings")
            if not _TOKEN.match(name) or not _VALUE.match(value):
                raise ValueError(f"header {name!r}: {value!r} has a forbidden character")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        self._head = "".join(lines).encode("latin-1")
        return self.write

    def write(self, data):
        if self._head is None:
            raise AssertionError("the app wrote its body before start_response")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"the app's body holds {type(data).__name__}, not bytes")
        if not self.sent:
            if not data:
                return
            self._send_head()
        if data:
            self._write(bytes(data))
            self._flush()

    def finish(self):
        if self._head is None:
            raise AssertionError("the app returned without calling start_response")
        if not self.sent:
            self._send_head()

    def fail(self):
        if not self.sent:
            self._head = b"Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"
            self._send_head()
            self._write(b"Internal Server Error\n")
            self._flush()

    def _send_head(self):
        self.sent = True
        self._write(self._head)


class _LimitedReader(io.RawIOBase):
    """A CGI request's body: CONTENT_LENGTH bytes of stdin (all of it when None), then end
    of file."""

    def __init__(self, stream, length):
        self._stream = stream
        self._left = length

    def readable(self):
        return True

    def readinto(self, buffer):
        if self._left is None:
            return self._stream.readinto(buffer) or 0
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._stream.readinto(view)
        self._left -= n or 0
        return n or 0


class _Channel:
    """FastCGI records over the worker channel."""

    def __init__(self, read, write):
        self._read = read
        self._write = write
        self._buffer = bytearray()
        self.input_done = True

    def _fill(self, size):
        while len(self._buffer) < size:
            chunk = self._read(256 * 1024)
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def record(self):
        """(type, content) of the next record; None when the server has closed."""
        if not self._fill(8):
            return None
        _, kind, _, length, padding = _HEADER.unpack_from(self._buffer)
        if not self._fill(8 + length + padding):
            return None
        content = bytes(self._buffer[8 : 8 + length])
        del self._buffer[: 8 + length + padding]
        return kind, content

    def request(self):
        """The next request's params (its CGI environment); None when the server has closed."""
        params = bytearray()
        begun = False
        while True:
            record = self.record()
            if record is None:
                return None
            kind, content = record
            if kind == _BEGIN_REQUEST:
                begun, params = True, bytearray()
            elif kind == _PARAMS and begun:
                if not content:
                    self.input_done = False
                    return _decode_params(params)
                params += content

    def stdin(self):
        """The next piece of the body; b'' at its end."""
        while not self.input_done:
            record = self.record()
            if record is None:
                self.input_done = True
                break
            kind, content = record
            if kind == _STDIN:
                if not content:
                    self.input_done = True
                return content
        return b""

    def send(self, kind, data):
        view = memoryview(data)
        for start in range(0, max(len(view), 1), _MAX_CONTENT):
            piece = view[start : start + _MAX_CONTENT]
            padding = -len(piece) % 8
            record = _HEADER.pack(1, kind, 1, len(piece), padding) + bytes(piece) + bytes(padding)
            if not self._write(record):
                raise BrokenPipeError("the server closed the worker channel")


def _decode_params(data):
    environ = {}
    at = 0
    while at < len(data):
        lengths = []
        for _ in range(2):
            if data[at] < 0x80:
                lengths.append(data[at])
                at += 1
            else:
                lengths.append(int.from_bytes(data[at : at + 4], "big") & 0x7FFFFFFF)
                at += 4
        name = data[at : at + lengths[0]].decode("latin-1")
        at += lengths[0]
        environ[name] = data[at : at + lengths[1]].decode("latin-1")
        at += lengths[1]
    return environ


class _Stdin(io.RawIOBase):
    """A worker request's body, record by record, as the app reads it (wsgi.input)."""

    def __init__(self, channel):
        self._channel = channel
        self._pending = b""

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self._pending:
            self._pending = self._channel.stdin()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _ErrorStream(io.TextIOBase):
    """wsgi.errors in a worker: lines to the server's log, for the request at hand."""

    def __init__(self, channel):
        self._channel = channel
        self._pending = []

    def writable(self):
        return True

    def write(self, text):
        self._pending.append(text)
        if "\n" in text:
            self.flush()
        return len(text)

    def flush(self):
        if self._pending:
            data = "".join(self._pending).encode("utf-8", "backslashreplace")
            self._pending = []
            self._channel.send(_STDERR, data)


class _FileWrapper:
    """wsgi.file_wrapper: a file's blocks as the body."""

    def __init__(self, file, block_size=64 * 1024):
        self.file = file
        self.block_size = block_size
        close = getattr(file, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self):
        while True:
            block = self.file.read(self.block_size)
            if not block:
                return
            yield block
