"""{{name}}: a form and a page made from a template, as a CGI app."""

import cgi
import html
import os
import string

HERE = os.path.dirname(os.path.abspath(__file__))


def render(name, **values):
    with open(os.path.join(HERE, "templates", name), encoding="utf-8") as f:
        return string.Template(f.read()).substitute(values)


form = cgi.FieldStorage()
name = form.getfirst("name", "").strip()
greeting = f"Hello, {html.escape(name)}!" if name else "Hello! Who are you?"
print("Content-Type: text/html; charset=utf-8")
print()
print(render("page.html", title="{{name}}", greeting=greeting,
             method=html.escape(os.environ.get("REQUEST_METHOD", ""))))
