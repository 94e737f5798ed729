"""Open a page in headless Chromium and report what a reader would see: a value the page computes
and every console error.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages
ended by a NUL byte, read by the browser on fd 3, written on fd 4), so the standard library is
enough: no port, no websocket client, no driver binary or package to match the browser's version.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Flags that start headless Chromium on a closed network without a sandbox or GPU.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The first Chromium on PATH (Debian's `chromium`; `make test` installs it where missing)."""
    return next((found for name in EXECUTABLES if (found := shutil.which(name))), None)


@dataclass
class PageView:
    """What a page showed: the value of the expression evaluated after it loaded, and its errors
    (uncaught exceptions, console.error and console.assert, failed loads)."""

    value: Any
    errors: list[str] = field(default_factory=list)


class Chromium:
    """A headless Chromium for one test session; `open(path, expression)` loads a file in a new tab."""

    def __init__(self, executable: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="steerscope-chromium-")
        self._log = open(Path(self._profile.name) / "stderr.log", "wb")  # closed in close()
        # sh maps the pipes subprocess puts on fds 0 and 1 to the fds 3 and 4 the browser talks on.
        self._process = subprocess.Popen(
            ["sh", "-c", 'exec "$@" 3<&0 4>&1 0</dev/null 1>&2', "chromium", executable, *FLAGS,
             f"--user-data-dir={self._profile.name}/profile", "about:blank"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )  # fmt: skip
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, path: Path, expression: str) -> PageView:
        """Load `path` in a new tab, wait for its load event, then evaluate `expression` (a promise
        is awaited) and return its value with every error the page reported until then."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", session=session, url=path.resolve().as_uri())
        self._wait_for("Page.loadEventFired", session)
        got = self.call(
            "Runtime.evaluate", session=session, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in got:
            raise RuntimeError(f"the check itself failed: {got['exceptionDetails']}")
        errors = [text for event in self._events if (text := _error_text(event, session))]
        self.call("Target.closeTarget", targetId=target)
        return PageView(got["result"].get("value"), errors)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result, keeping the events that arrive meanwhile."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._process.stdin.write(json.dumps(message).encode() + b"\0")
        self._process.stdin.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass  # it is gone already; the wait below reaps it
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
        self._profile.cleanup()

    def _wait_for(self, method: str, session: str) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._read())

    def _read(self) -> dict[str, Any]:
        """The next message from the browser, or TimeoutError after `timeout` seconds of silence."""
        pipe = self._process.stdout.fileno()
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([pipe], [], [], self.timeout)
            chunk = os.read(pipe, 1 << 16) if ready else b""
            if not chunk:
                raise TimeoutError(f"chromium sent nothing for {self.timeout} s; its log:\n{self.log()}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def log(self) -> str:
        self._log.flush()
        return (Path(self._profile.name) / "stderr.log").read_text(errors="replace")[-4000:]


def _error_text(event: dict[str, Any], session: str) -> str | None:
    """The text of an error a page reported in `event`, or None when the event is no error."""
    if event.get("sessionId") != session:
        return None
    params = event.get("params", {})
    method = event.get("method")
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return details.get("exception", {}).get("description") or details.get("text", "exception")
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        return " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return params["entry"]["text"]
    return None
