"""A minimal headless-Chromium driver over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no
WebDriver, no network port, no third-party package.

Chromium reads NUL-terminated JSON commands on its fd 3 and writes replies and events on its fd 4; a few lines
of Python (:data:`LAUNCHER`, run before Chromium in the child) put our pipe ends there (a POSIX shell's
``3<&N`` cannot: dash refuses ``N >= 10``, which a test process with many open files reaches).
:class:`Chromium` opens a page, collects console errors and uncaught exceptions, evaluates JavaScript and takes
screenshots.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1600")


LAUNCHER = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])  # out of the way of 3 and 4 first
os.dup2(r, 3)
os.dup2(w, 4)
for fd in {r, w, int(sys.argv[1]), int(sys.argv[2])} - {3, 4}:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""
"""Run as ``python -c LAUNCHER CMD_R OUT_W CHROMIUM ARGS...``: Chromium with the pipe ends on fds 3 and 4."""


def find_chromium() -> str | None:
    """``$SNNKIT_CHROMIUM``, else the first Chromium/Chrome on ``PATH``."""
    env = os.environ.get("SNNKIT_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class ChromiumError(RuntimeError):
    """Chromium did not start, did not answer in time, refused a command or failed to load a page."""


class Chromium:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, binary: str, user_data_dir: Path, timeout: float = 60.0):
        self.timeout = timeout
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._out_r, out_w = os.pipe()  # Chromium writes on fd 4, we read
        args = [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"]
        self.log = Path(user_data_dir).with_name(Path(user_data_dir).name + "-chromium.log")
        with open(self.log, "wb") as log:  # Chromium's own messages; read back when it fails
            self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(cmd_r), str(out_w), *args],
                                         pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        os.close(cmd_r)
        os.close(out_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._queue: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = None

    # --- transport ---------------------------------------------------------------------------------------
    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._out_r, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                msg, buf = buf.split(b"\0", 1)
                self._queue.put(json.loads(msg))
        self._queue.put(None)

    def _pump(self, until: float) -> bool:
        """Move one message from the reader into replies/events; False when none came before ``until``."""
        try:
            msg = self._queue.get(timeout=max(until - time.monotonic(), 0.01))
        except queue.Empty:
            return False
        if msg is None:
            err = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise ChromiumError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()}): {err.strip()[-2000:]}")
        if "id" in msg:
            self._replies[msg["id"]] = msg
        else:
            self.events.append(msg)
        return True

    def send(self, method: str, params: dict | None = None, *, session: bool = True) -> dict:
        """Send one command (to the page session unless ``session=False``) and return its result."""
        self._next_id += 1
        mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        until = time.monotonic() + self.timeout
        while mid not in self._replies:
            if time.monotonic() > until:
                raise ChromiumError(f"no reply to {method} within {self.timeout:g} s")
            self._pump(until)
        reply = self._replies.pop(mid)
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        """The first event ``method`` since the last navigation (waiting up to ``timeout`` seconds)."""
        until = time.monotonic() + (timeout or self.timeout)
        seen = 0
        while True:
            for e in self.events[seen:]:
                if e.get("method") == method:
                    return e
            seen = len(self.events)
            if time.monotonic() > until:
                raise ChromiumError(f"no {method} event within {timeout or self.timeout:g} s")
            self._pump(until)

    # --- page ---------------------------------------------------------------------------------------------
    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event (images included); a failed navigation raises."""
        self.events.clear()
        res = self.send("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise ChromiumError(f"{url}: {res['errorText']}")
        self.wait_event("Page.loadEventFired")

    def images(self) -> list[dict]:
        """Every ``<img>`` of the page once decoded: ``alt``, ``natural_width``/``natural_height`` (pixels, 0 for
        an image that did not load) and ``error`` (the decode failure, or None)."""
        return self.evaluate(
            "Promise.all(Array.from(document.images, i => i.decode().then(() => null, e => String(e))))"
            ".then(errs => Array.from(document.images, (i, k) => ({alt: i.alt, natural_width: i.naturalWidth,"
            " natural_height: i.naturalHeight, error: errs[k]})))")

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page (a promise is awaited); a throw raises."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise ChromiumError(f"script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen since the last navigation."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')}")
        return out

    def screenshot(self, path: Path) -> Path:
        """Write a PNG of the whole page (1280 px wide, at most 16000 px tall) to ``path``."""
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": int(min(max(height, 800), 16000)), "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    # --- lifetime -----------------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", session=False)
        except (ChromiumError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "Chromium":
        try:
            self.open_page()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
