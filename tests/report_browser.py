"""Headless Chromium driven through the DevTools protocol, for the report's browser test."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket
from PIL import Image

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,1400", "--hide-scrollbars"]


def _which() -> str | None:
    given = os.environ.get("KDCORE_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((path for path in map(shutil.which, NAMES) if path), None)


def find_chromium(install: bool) -> str | None:
    """A Chromium binary; with ``install``, Debian's ``chromium`` package is installed where it is
    absent and this process may (root, apt-get). None where no Chromium can be had."""
    found = _which()
    if found or not install or os.environ.get("KDCORE_CHROMIUM"):
        return found
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            if subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False).returncode != 0:
                return None
        except (OSError, subprocess.TimeoutExpired):
            return None
    return _which()


class Browser:
    """One headless Chromium with one page; ``open``, ``eval``, ``drag``, ``screenshot``.

    Records the URL of every request the page makes (``requests``) and every script error
    (``errors``) since the last ``open``.
    """

    def __init__(self, binary: str, profile: Path, timeout: float = 20.0):
        self.binary, self.profile, self.timeout = binary, Path(profile), timeout
        self.requests: list[str] = []
        self.errors: list[str] = []
        self._id = 0

    def __enter__(self) -> Browser:  # noqa: PYI034 - never subclassed
        self.proc = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self.profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=self.timeout,
                                                  suppress_origin=True)
            for domain in ("Page", "Runtime", "Network"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.proc.kill()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with status {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.binary} did not open its DevTools port within {self.timeout} s")

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(json.dumps(params.get("args"))[:500])

    def send(self, method: str, params: dict | None = None, *, until: str | None = None) -> dict:
        """Sends one command and returns its result (and, with ``until``, waits for that event too)."""
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        result, seen = None, until is None
        deadline = time.monotonic() + self.timeout
        while result is None or not seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method}: no answer within {self.timeout} s")
            message = json.loads(self.ws.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result = message.get("result", {})
            else:
                self._event(message)
                seen = seen or message.get("method") == until
        return result

    def open(self, path: Path) -> None:
        self.requests, self.errors = [], []
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, until="Page.loadEventFired")

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 5) -> None:
        """A left-button drag with the mouse, as a person does it (press, moves, release)."""
        x0, y0 = start
        x1, y1 = end
        self.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": x0, "y": y0, "button": "left",
                                               "buttons": 1, "clickCount": 1})
        for i in range(1, steps + 1):
            t = i / steps
            self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x0 + t * (x1 - x0),
                                                   "y": y0 + t * (y1 - y0), "button": "left", "buttons": 1})
        self.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": x1, "y": y1, "button": "left",
                                               "buttons": 0, "clickCount": 1})
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def screenshot(self, full: bool = False) -> Image.Image:
        """The viewport (or, with ``full``, the whole page) as a PIL image."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": full})["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
