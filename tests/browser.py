"""Load a static page in real headless Chromium and report what it rendered.

The page is served on 127.0.0.1 beside a harness page that loads it in a
same-origin iframe, waits for every image, and writes what it found (title,
section headings, tables, each image's natural width) into its own DOM, which
``chromium --dump-dom`` prints.
"""
from __future__ import annotations

import functools
import html
import json
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

HARNESS = b"""<!DOCTYPE html><html><body>
<iframe id="f" src="PAGE" style="width:1200px;height:900px"></iframe>
<script>
const f = document.getElementById('f');
f.onload = () => {
  const d = f.contentDocument;
  const imgs = Array.from(d.images);
  const done = imgs.map(i => i.complete ? Promise.resolve() :
                        new Promise(r => { i.onload = r; i.onerror = r; }));
  Promise.all(done).then(() => {
    const out = {title: d.title,
                 sections: Array.from(d.querySelectorAll('section h2')).map(h => h.textContent),
                 tables: d.querySelectorAll('table').length,
                 text: d.body.innerText.length,
                 images: imgs.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth,
                                         ok: i.complete && i.naturalWidth > 0}))};
    const pre = document.createElement('pre');
    pre.id = 'result';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
};
</script></body></html>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--dump-dom"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("Chromium is needed for the report test: apt-get install -y chromium "
                           "(`make test` installs it when run as root)")
    return found


def render(directory: str, page: str, profile: str) -> dict:
    """What Chromium rendered for ``directory/page``: see the module docstring."""
    harness = HARNESS.replace(b"PAGE", page.encode())

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/__harness.html":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(harness)))
                self.end_headers()
                self.wfile.write(harness)
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/__harness.html"
        out = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", url], capture_output=True,
                             text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    match = re.search(r'<pre id="result">(.*?)</pre>', out.stdout, re.S)
    if not match:
        raise AssertionError(f"the harness produced no result; chromium exit {out.returncode}: "
                             f"{out.stderr[-2000:]}")
    return json.loads(html.unescape(match.group(1)))
