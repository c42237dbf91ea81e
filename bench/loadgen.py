"""Load generators for bench/compare_glance.py.

- :func:`run_wrk`: request rows (list/show/create/patch) through ``wrk`` (compiled,
  epoll, one thread) driven by ``wrk_request.lua``; returns requests/s, latency
  percentiles, errors and the CPU the wrk process itself used.
- :func:`upload` / :func:`download`: one 1 GiB transfer over a raw socket:
  ``socket.sendfile`` for the upload (zero-copy, the client costs almost no CPU)
  and ``recv_into`` a reused 4 MiB buffer for the download (nothing is copied or
  hashed on the client). Both return MB/s (10**6 bytes) and the client's CPU.
- :func:`create_images`: seeds images with a thread pool of keep-alive
  ``http.client`` connections (not measured).

Every function raises :class:`BenchError` when the server answers with an
unexpected status, so a broken endpoint never turns into a fast-looking number.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_request.lua"
MB = 10**6


class BenchError(RuntimeError):
    """The workload could not be run as specified (bad status, tool missing, ...)."""


@dataclass
class RequestResult:
    requests: int
    duration_s: float
    rps: float  # successful (< 400) responses per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    client_cpu_pct: float  # CPU of the load generator, % of one core
    server_cpu_pct: float = 0.0  # filled in by the caller (server process tree)
    other_cpu_pct: float = 0.0  # CPU used by anything else on the machine meanwhile
    tool: str = "wrk"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TransferResult:
    bytes: int
    seconds: float
    mb_per_s: float
    client_cpu_pct: float
    server_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_version() -> str:
    wrk = shutil.which("wrk")
    if not wrk:
        return "missing"
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "?"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, *, method: str, path: str, headers: Mapping[str, str],
            connections: int, duration_s: float, body: str | None = None,
            ids: Sequence[str] = (), max_requests: int = 0,
            timeout_s: float = 30.0) -> RequestResult:
    """Run wrk with ``connections`` keep-alive connections on one thread.

    ``path`` may contain ``{id}`` (round-robin over ``ids``) and ``body`` ``{n}``
    (a counter). With ``max_requests`` > 0 the run stops after that many
    responses (the duration is then only an upper bound).
    """
    wrk = shutil.which("wrk")
    if not wrk:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out = Path(tmp) / "out.json"
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        env = dict(os.environ, BENCH_METHOD=method, BENCH_PATH=path,
                   BENCH_IDS_FILE=str(ids_file) if ids else "",
                   BENCH_BODY=body or "", BENCH_OUT=str(out),
                   BENCH_MAX_REQUESTS=str(max_requests),
                   BENCH_HEADERS="\n".join(f"{k}: {v}" for k, v in headers.items()))
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
               f"--timeout={int(timeout_s)}s", "-s", str(WRK_SCRIPT), url]
        cpu0 = _children_cpu()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0 or not out.exists():
            raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        data = json.loads(out.read_text())
    seconds = data["duration_us"] / 1e6
    lat = data["latency_us"]
    errors = data["errors"]
    if data["requests"] == 0:  # nothing answered within the row: report it, do not guess
        errors = {**errors, "no_response": 1}
    ok = data["requests"] - errors["status"]  # wrk counts status >= 400 as errors
    return RequestResult(
        requests=data["requests"], duration_s=seconds, rps=ok / seconds,
        p50_ms=lat["p50"] / 1000, p90_ms=lat["p90"] / 1000, p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000, errors=errors,
        client_cpu_pct=100.0 * cpu / seconds if seconds else 0.0)


# --- raw-socket transfers ----------------------------------------------------------


def _split_url(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.partition(":")
    return host, int(port or 80)


def _request_head(method: str, host: str, path: str, headers: Mapping[str, str],
                  extra: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in {**headers, **extra}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """Minimal HTTP/1.1 response reader over a socket (Content-Length, chunked or close).

    Bulk bytes go straight from the socket into one reused buffer (``recv_into``),
    so a download costs the client one syscall per buffer and no copy.
    """

    def __init__(self, sock: socket.socket, bufsize: int = 4 * 1024 * 1024) -> None:
        self.sock = sock
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)
        self.pending = bytearray()
        self.kept = bytearray()

    def _fill(self) -> None:
        n = self.sock.recv_into(self.buf)
        if n == 0:
            raise BenchError("connection closed by the server mid-response")
        self.pending += self.view[:n]

    def _readline(self) -> bytes:
        while b"\r\n" not in self.pending:
            self._fill()
        line, _, rest = bytes(self.pending).partition(b"\r\n")
        self.pending = bytearray(rest)
        return line

    def _consume(self, count: int, keep: bool) -> None:
        got = min(len(self.pending), count)
        if keep:
            self.kept += self.pending[:got]
        del self.pending[:got]
        remaining = count - got
        while remaining > 0:
            n = self.sock.recv_into(self.buf, min(len(self.buf), remaining))
            if n == 0:
                raise BenchError(f"connection closed with {remaining} bytes missing")
            if keep:
                self.kept += self.view[:n]
            remaining -= n

    def head(self) -> tuple[int, dict[str, str]]:
        """Status and headers of the final response (interim 1xx ones are skipped)."""
        while True:
            status, headers = self._one_head()
            if status >= 200:
                return status, headers

    def _one_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.pending:
            self._fill()
        head, _, rest = bytes(self.pending).partition(b"\r\n\r\n")
        self.pending = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def body(self, headers: Mapping[str, str], keep: bool = False,
             status: int = 200) -> tuple[int, bytes]:
        """Read the body; return (its length, the body if ``keep`` else b"")."""
        self.kept = bytearray()
        if status in (204, 304):
            return 0, b""
        if "content-length" in headers:
            length = int(headers["content-length"])
            self._consume(length, keep)
            return length, bytes(self.kept)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self._readline().split(b";")[0], 16)
                if size == 0:
                    while self._readline():  # trailers, then the empty line
                        pass
                    return total, bytes(self.kept)
                self._consume(size, keep)
                total += size
                self._consume(2, False)
        total = len(self.pending)  # no framing: read until the server closes
        if keep:
            self.kept += self.pending
        while True:
            n = self.sock.recv_into(self.buf)
            if n == 0:
                return total, bytes(self.kept)
            total += n
            if keep:
                self.kept += self.view[:n]


def upload(url: str, image_id: str, blob: Path, headers: Mapping[str, str]) -> TransferResult:
    """PUT ``blob`` to ``/v2/images/{id}/file`` with sendfile; time until the response."""
    host, port = _split_url(url)
    size = blob.stat().st_size
    head = _request_head("PUT", f"{host}:{port}", f"/v2/images/{image_id}/file", headers,
                         {"Content-Type": "application/octet-stream",
                          "Content-Length": str(size)})
    cpu0 = time.process_time()
    with socket.create_connection((host, port)) as sock, blob.open("rb") as f:
        start = time.perf_counter()
        sock.sendall(head)
        sock.sendfile(f)
        reader = _Reader(sock, 65536)
        status, rheaders = reader.head()
        _, body = reader.body(rheaders, keep=True, status=status)
        seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    if status not in (200, 201, 204):
        raise BenchError(f"upload answered {status}: {body[:300]!r}")
    return TransferResult(bytes=size, seconds=seconds, mb_per_s=size / MB / seconds,
                          client_cpu_pct=100.0 * cpu / seconds)


def download(url: str, image_id: str, headers: Mapping[str, str],
             expected: int) -> TransferResult:
    """GET ``/v2/images/{id}/file`` into a reused buffer; time until the last byte."""
    host, port = _split_url(url)
    head = _request_head("GET", f"{host}:{port}", f"/v2/images/{image_id}/file", headers, {})
    cpu0 = time.process_time()
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        start = time.perf_counter()
        sock.sendall(head)
        reader = _Reader(sock)
        status, rheaders = reader.head()
        if status != 200:
            _, body = reader.body(rheaders, keep=True, status=status)
            raise BenchError(f"download answered {status}: {body[:300]!r}")
        got, _ = reader.body(rheaders)
        seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    if got != expected:
        raise BenchError(f"download returned {got} bytes, expected {expected}")
    framing = "content-length" if "content-length" in rheaders else rheaders.get(
        "transfer-encoding", "close")
    return TransferResult(bytes=got, seconds=seconds, mb_per_s=got / MB / seconds,
                          client_cpu_pct=100.0 * cpu / seconds, extra={"framing": framing})


def make_blob(path: Path, size: int) -> Path:
    """A file of ``size`` pseudo-random bytes (reused when it already has that size)."""
    if path.exists() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    chunk = bytearray(os.urandom(min(size, 16 * 1024 * 1024)))
    chunk[510:512] = b"\0\0"      # no MBR signature: uploads of it are inspected
    with tmp.open("wb") as f:
        written = 0
        while written < size:
            # vary the chunk so the data does not repeat (no dedup/compression effects)
            piece = chunk[: size - written]
            f.write(piece)
            written += len(piece)
            chunk = chunk[1:] + chunk[:1]
    tmp.rename(path)
    return path


# --- JSON requests (seeding, not measured) -------------------------------------------


class JsonClient:
    """Thread-confined keep-alive JSON client (http.client reconnects after Connection: close)."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        self.host, self.port = _split_url(url)
        self.headers = dict(headers)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def call(self, method: str, path: str, body: Any = None, *,
             content_type: str = "application/json",
             expect: Sequence[int] = (200, 201, 204)) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        hdrs = dict(self.headers)
        if payload is not None:
            hdrs["Content-Type"] = content_type
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=payload, headers=hdrs)
                resp = self.conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt == 2:
                    raise
        if resp.status not in expect:
            raise BenchError(f"{method} {path} answered {resp.status}: {data[:300]!r}")
        return json.loads(data) if data else None

    def close(self) -> None:
        self.conn.close()


def create_images(url: str, headers: Mapping[str, str], count: int, body: Mapping[str, Any],
                  threads: int = 8) -> list[str]:
    """Create ``count`` images with ``body``; return their ids."""
    per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

    def work(n: int) -> list[str]:
        client = JsonClient(url, headers)
        try:
            return [client.call("POST", "/v2/images", body, expect=(201,))["id"]
                    for _ in range(n)]
        finally:
            client.close()

    with ThreadPoolExecutor(threads) as pool:
        return [i for ids in pool.map(work, [n for n in per if n]) for i in ids]
