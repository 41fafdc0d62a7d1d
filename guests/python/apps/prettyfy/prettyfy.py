"""PrettyFy: shows a file from files/ as syntax-highlighted HTML (a CGI script).

    GET /?file=hello.py

Like mod_wasm's demo, the script joins the name to its directory without checking it. Run as
a native CGI script, `?file=../../../../etc/passwd` would print the host's password file; under
wasmbridge the interpreter sees only the directories it was granted, so the same request gets
an error page.
"""

import html
import os
import sys
from urllib.parse import parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))  # Pygments, installed beside the script

from pygments import highlight  # noqa: E402
from pygments.formatters import HtmlFormatter  # noqa: E402
from pygments.lexers import TextLexer, get_lexer_for_filename  # noqa: E402
from pygments.util import ClassNotFound  # noqa: E402


def respond(status, body):
    print(f"Status: {status}")
    print("Content-Type: text/html; charset=utf-8")
    print()
    print(body)


def main():
    query = parse_qs(os.environ.get("QUERY_STRING", ""))
    name = query.get("file", ["hello.py"])[0]
    path = os.path.join(HERE, "files", name)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
    except OSError as e:
        respond("404 Not Found", f"<h1>Cannot show {html.escape(name)}</h1><p>{html.escape(e.strerror or str(e))}</p>")
        return
    try:
        lexer = get_lexer_for_filename(name)
    except ClassNotFound:
        lexer = TextLexer()
    formatter = HtmlFormatter(full=True, title=name, linenos="table")
    respond("200 OK", highlight(source, lexer, formatter))


main()
