"""Start a real `audiorouter serve` process on 127.0.0.1 for tests and benches.

    with GatewayProcess(["--upstream", upstream.url]) as gw:
        client = openai.OpenAI(base_url=gw.url, api_key="x")

The gateway listens on an ephemeral port (--port 0) and prints the bound address on stderr; the
process is terminated (then killed) on exit, so a failing test never leaves it running.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"audiorouter gateway on (http://127\.0\.0\.1:(\d+))/v1")


class GatewayProcess:
    def __init__(self, args: list[str], env: dict | None = None, start_timeout_s: float = 90.0):
        self.args = ["--port", "0", *args]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.stderr_lines: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def start(self) -> "GatewayProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", *self.args], cwd=REPO, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))
                m = _LISTENING.search(line)
                if m and not found.is_set():
                    self.port = int(m.group(2))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while not found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start: " + " | ".join(self.stderr_lines[-5:]))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
