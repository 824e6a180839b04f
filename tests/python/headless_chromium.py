"""A headless Chromium driven over the DevTools protocol (``--remote-debugging-pipe``).

Enough of the protocol for the page tests: open a tab, load a URL, collect what
the page logs (console calls, uncaught exceptions, browser log entries such as a
blocked resource or a Content-Security-Policy violation), run an expression in
the page, take a screenshot. The browser runs in a temporary profile and is
stopped by its pid.

Chromium reads commands on fd 3 and writes replies and events on fd 4, each a
JSON object ended by a NUL byte.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional


def find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends above 4, so that moving them to 3 and 4 overwrites nothing
        to_browser_r, from_browser_w = (_above_4(fd) for fd in (to_browser_r, from_browser_w))
        args = [binary, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--mute-audio",
                "--hide-scrollbars", "--user-data-dir=%s" % profile,
                "--window-size=%d,%d" % (width, height), "--remote-debugging-pipe"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # fds 3 and 4 for Chromium, through a shell that moves the pipe ends there
        cmd = 'exec "$@" 3<&%d 4>&%d %d<&- %d>&-' % (to_browser_r, from_browser_w, to_browser_r,
                                                    from_browser_w)
        self.log = open(profile / "chromium.log", "wb")  # noqa: SIM115 (the browser's whole life; close())
        self.proc = subprocess.Popen(["bash", "-c", cmd, "bash"] + args + ["about:blank"],
                                     pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next_id = 0
        self.events: List[Dict[str, Any]] = []
        self.session = ""

    # -- protocol
    def _send(self, method: str, params: Optional[Dict[str, Any]] = None, session: str = "") -> int:
        self._next_id += 1
        msg: Dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        return self._next_id

    def _read(self, deadline: float) -> Dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time (log: %s)" % self.log.name)
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe (exit %s; log: %s)"
                                       % (self.proc.poll(), self.log.name))
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: Dict[str, Any] = json.loads(raw)
        return msg

    def call(self, method: str, params: Optional[Dict[str, Any]] = None, timeout: float = 30,
             session: Optional[str] = None) -> Dict[str, Any]:
        """Sends one command and returns its result; events meanwhile go to self.events."""
        mid = self._send(method, params, self.session if session is None else session)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                result: Dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30, after: int = 0) -> Dict[str, Any]:
        """The first event named ``method`` at index >= ``after`` of self.events (waiting for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events[after:]:
                if ev["method"] == method:
                    return ev
            msg = self._read(deadline)
            if "method" in msg:
                self.events.append(msg)

    # -- page
    def open_tab(self) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session="")["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session="")["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(domain + ".enable")

    def load(self, url: str, timeout: float = 30) -> None:
        mark = len(self.events)
        res = self.call("Page.navigate", {"url": url})
        if res.get("errorText"):
            raise RuntimeError("loading %s: %s" % (url, res["errorText"]))
        self.wait_event("Page.loadEventFired", timeout, after=mark)

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError("evaluate %r: %s" % (expression, res["exceptionDetails"]))
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The whole page (not just the window) as a PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        width = int(self.evaluate("Math.ceil(document.documentElement.scrollWidth)"))
        res = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        path.write_bytes(base64.b64decode(res["data"]))

    def problems(self) -> List[str]:
        """What the page reported as wrong so far: console errors and warnings, uncaught
        exceptions, browser log entries of level warning or error."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append("console.%s: %s" % (p["type"], " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", []))))
            elif ev["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("exception: %s" % d.get("exception", {}).get("description", d.get("text")))
            elif ev["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("warning", "error"):
                e = p["entry"]
                out.append("log %s (%s): %s %s" % (e["level"], e.get("source"), e.get("text"),
                                                   e.get("url", "")))
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", session="", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its pid
            self.proc.wait(timeout=10)
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
