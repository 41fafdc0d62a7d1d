// {{name}}: a wasi:http component in JavaScript — a router, a JSON endpoint and a streamed
// echo. componentize-js serves the `fetch` event with the web's Request and Response.

async function handle(request) {
  const url = new URL(request.url);
  if (request.method === "GET" && url.pathname === "/") {
    return new Response("Hello from {{name}}!\n", {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  if (request.method === "GET" && url.pathname === "/api/hello") {
    const name = url.searchParams.get("name") ?? "world";
    return new Response(JSON.stringify({ greeting: `Hello, ${name}!` }) + "\n", {
      headers: { "content-type": "application/json" },
    });
  }
  if (request.method === "POST" && url.pathname === "/echo") {
    // The request body as a stream, passed on as it arrives.
    return new Response(request.body, {
      headers: { "content-type": "application/octet-stream" },
    });
  }
  return new Response("Not Found\n", { status: 404 });
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
