"""Open pages in headless Chromium (Debian's package) as a reader would, and report what the
reader got: the title, the first heading, the navigation links, every console error and uncaught
exception, and a screenshot.

It speaks the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages ending
in NUL on file descriptors 3 and 4), so it needs no port, no websocket library and no browser
download. A static site is served on 127.0.0.1 by ``serve_directory``.

    python -m tests.browser SITE_DIR PAGE OUTPUT.png   # screenshot one page of a built site
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1280, 900)
# What the page reports once loaded: enough to tell a rendered Material page from a broken one.
_PAGE_FACTS = """JSON.stringify({
  title: document.title,
  h1: (document.querySelector("article h1") || {}).textContent || "",
  nav_links: document.querySelectorAll("nav.md-nav--primary a.md-nav__link").length,
  stylesheets: document.styleSheets.length
})"""


class BrowserError(RuntimeError):
    """Chromium did not start, answer or load a page in time; the message says which."""


@dataclass
class PageReport:
    """What a reader of ``url`` got."""

    url: str
    title: str
    h1: str
    nav_links: int
    stylesheets: int
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""


def _above_4(fd: int) -> int:
    """``fd`` moved to a number above 4, so that handing the pipe ends to the browser as fds 3
    and 4 cannot overwrite one with the other."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Chromium:
    """A headless Chromium driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, binary: str = CHROMIUM, timeout: float = 30.0) -> None:
        self._binary = binary
        self._timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        commands_read, self._commands = map(_above_4, os.pipe())
        self._replies, replies_write = map(_above_4, os.pipe())
        flags = [
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={self._profile.name}",
            "about:blank",
        ]
        # The protocol wants the commands on fd 3 and the replies on fd 4 of the browser (bash:
        # dash redirects only single-digit descriptors).
        shell = f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write}'
        self._process = subprocess.Popen(
            ["bash", "-c", shell, self._binary, *flags],
            pass_fds=(commands_read, replies_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close")
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self._profile.cleanup()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._replies], [], [], max(left, 0))
            if not ready:
                raise BrowserError(f"Chromium sent nothing for {self._timeout:.0f}s")
            chunk = os.read(self._replies, 65536)
            if not chunk:
                raise BrowserError(
                    f"Chromium closed the DevTools pipe (exit {self._process.poll()})"
                )
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Call ``method`` and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self._timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method and event.get("sessionId") == session:
                    return
            seen = len(self.events)
            self.events.append(self._read_message(deadline))

    def _settle(self, seconds: float) -> None:
        """Collect the events of the next ``seconds`` (scripts that run after load)."""
        deadline = time.monotonic() + seconds
        while True:
            ready, _, _ = select.select(
                [self._replies], [], [], max(deadline - time.monotonic(), 0)
            )
            if not ready and b"\0" not in self._buffer:
                return
            self.events.append(self._read_message(time.monotonic() + self._timeout))

    def open(self, url: str, *, screenshot: bool = False) -> PageReport:
        """Load ``url`` in a new tab and report what it showed and what went wrong."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        first_event = len(self.events)
        navigated = self.send("Page.navigate", {"url": url}, session)
        if "errorText" in navigated:
            raise BrowserError(f"{url}: {navigated['errorText']}")
        self._wait_for("Page.loadEventFired", session)
        self._settle(1.0)
        facts = json.loads(
            self.send(
                "Runtime.evaluate", {"expression": _PAGE_FACTS, "returnByValue": True}, session
            )["result"]["value"]
        )
        report = PageReport(url=url, **facts)
        report.errors = _errors(
            [event for event in self.events[first_event:] if event.get("sessionId") == session]
        )
        if screenshot:
            shot = self.send("Page.captureScreenshot", {"format": "png"}, session)
            report.screenshot = base64.b64decode(shot["data"])
        self.send("Target.closeTarget", {"targetId": target})
        return report


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and browser-logged errors (a resource that failed
    to load) among ``events``."""
    found = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "assert",
        ):
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            found.append("console.error: " + " ".join(texts))
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description", "")
            found.append(f"exception: {details.get('text', '')} {description}".strip())
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            found.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    site, page, output = Path(argv[0]), argv[1], Path(argv[2])
    with serve_directory(site) as base, Chromium() as browser:
        report = browser.open(f"{base}/{page}", screenshot=True)
    if report.errors:
        print("\n".join(report.errors), file=sys.stderr)
        return 1
    output.write_bytes(report.screenshot)
    print(f"{output}: {report.title} ({len(report.screenshot)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
