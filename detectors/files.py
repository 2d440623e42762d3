"""Files carried in clear-text protocols, rebuilt from stream chunks for the YARA scanner.

- HTTP/1.x (any port, recognised by its request or status line): request and response bodies
  framed by Content-Length, chunked transfer coding, or the end of the connection; gzip and
  deflate content codings are undone (bounded). The name is Content-Disposition's filename or
  the last segment of the request path.
- FTP (control connections on ``ftp_ports``): PORT/EPRT and PASV/EPSV announce the data
  connection, RETR/STOR/STOU/APPE name the file; the data connection's bytes are the file.
- TFTP (UDP, requests to ``tftp_ports``): RRQ/WRQ name the file; DATA blocks from the transfer
  ports are put in order (duplicates dropped), with the block size of an OACK ``blksize``.

Everything is bounded: a file keeps at most ``max_file_bytes`` (the rest is counted, the file
is marked truncated), at most ``max_open_files`` files are buffered at once (others are
skipped), header blocks and control lines are capped, expectations expire. Nothing is written
to disk and names from the wire are only ever used as (sanitised) evidence text.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from sentinel.detector_settings import YaraSettings
from sentinel.events import ConnId, StreamData

MAX_HEADER = 16384  # bytes of an HTTP header block
MAX_LINE = 4096  # bytes of an FTP control line or HTTP chunk-size line
MAX_NAME = 200  # characters of a file name kept as evidence
MAX_EXPECTED = 256  # FTP/TFTP data connections waited for at once
EXPECT_SECONDS = 120.0  # how long an announced data connection is waited for
TFTP_BLOCK = 512  # RFC 1350 default block size

_REQUEST_LINE = re.compile(rb"^([A-Z]{3,16}) (\S{1,8192}) HTTP/1\.[01]\r?\n")
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([1-5]\d\d)")
_PASV = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(rb"\(\|\|\|(\d{1,5})\|\)")
_EPRT = re.compile(rb"^EPRT \|([12])\|([0-9A-Fa-f.:]{2,45})\|(\d{1,5})\|", re.IGNORECASE)
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8''|"?)([^";\r\n]+)""", re.IGNORECASE)


def clean_name(raw: str | bytes | None) -> str | None:
    """A file name from the wire, reduced to printable text for evidence."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = "".join(ch if ch.isprintable() else "?" for ch in text).strip()
    return text[:MAX_NAME] or None


@dataclass
class ExtractedFile:
    """One file rebuilt from a flow: its bytes (at most ``max_file_bytes``) and its origin."""

    protocol: str  # http | ftp | tftp
    name: str | None
    data: bytes
    size: int  # bytes seen on the wire for the body (before any content decoding)
    truncated: bool
    uid: str
    conn: ConnId
    is_orig: bool
    start_offset: int  # in this direction's stream: first byte of the body
    end_offset: int  # one past its last byte
    ts: float
    frame: int
    transport: str = "tcp"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class _Body:
    """A file being received: bounded buffer."""

    __slots__ = ("buf", "limit", "seen", "start")

    def __init__(self, start: int, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.seen = 0
        self.start = start

    def add(self, data: bytes | memoryview) -> None:
        self.seen += len(data)
        room = self.limit - len(self.buf)
        if room > 0:
            self.buf += data[:room]


class FileExtractor:
    """Feed it every stream chunk (with its stream offset); it returns completed files."""

    def __init__(self, settings: YaraSettings) -> None:
        self.settings = settings
        self.ftp_ports = frozenset(settings.ftp_ports)
        self.tftp_ports = frozenset(settings.tftp_ports)
        self.open_files = 0
        self.skipped = 0  # files not buffered because max_open_files were open
        self._flows: OrderedDict[str, Any] = OrderedDict()  # uid -> parser, or None
        # (ip, port) -> (control uid, expiry) for FTP data connections
        self._ftp_expect: OrderedDict[tuple[str, int], tuple[_FtpControl, float]] = OrderedDict()
        # (client ip, client port, server ip) -> (transfer, expiry) for TFTP
        self._tftp_expect: OrderedDict[tuple[str, int, str], tuple[_TftpTransfer, float]] = (
            OrderedDict()
        )

    # ------------------------------------------------------------------ entry points
    def feed(self, chunk: StreamData, offset: int, udp: bool) -> list[ExtractedFile]:
        uid = chunk.uid
        parser = self._flows.get(uid, False)
        evicted: list[ExtractedFile] = []
        if parser is False:
            parser = self._classify(chunk, udp)
            self._flows[uid] = parser
            if len(self._flows) > 4 * self.settings.max_streams:
                _, old = self._flows.popitem(last=False)
                if old is not None:  # what it had so far is still worth a scan
                    evicted = old.finish(self)
        if parser is None:
            return evicted
        return evicted + parser.feed(self, chunk, offset)

    def tracks(self, uid: str) -> bool:
        """Whether the flow may still yield files (False once it is known not to)."""
        return self._flows.get(uid) is not None

    def flow_end(self, uid: str) -> list[ExtractedFile]:
        parser = self._flows.pop(uid, None)
        return parser.finish(self) if parser is not None else []

    def expire(self, now: float) -> None:
        for expect in (self._ftp_expect, self._tftp_expect):
            for key in [k for k, (_, until) in expect.items() if until < now]:
                del expect[key]

    # ------------------------------------------------------------------ bounded buffers
    def open_body(self, start: int) -> _Body | None:
        if self.open_files >= self.settings.max_open_files:
            self.skipped += 1
            return None
        self.open_files += 1
        return _Body(start, self.settings.max_file_bytes)

    def close_body(self) -> None:
        self.open_files = max(0, self.open_files - 1)

    # ------------------------------------------------------------------ classification
    def _classify(self, chunk: StreamData, udp: bool) -> Any:
        # TFTP is recognised by its port and request format, not by the transport flag: a
        # one-datagram flow (the request) cannot be told from TCP by the stream alone.
        c = chunk.conn
        data = chunk.data
        transfer = self._tftp_match(c)
        if transfer is not None:
            return _TftpData(transfer)
        if c.resp_p in self.tftp_ports and chunk.is_orig:
            request = _TftpTransfer.parse_request(chunk)
            if request is not None:
                self._expect_tftp(c, request, chunk.ts)
                return _TftpData(request)
        if udp:
            return None
        for key in ((c.resp_h, c.resp_p), (c.orig_h, c.orig_p)):
            entry = self._ftp_expect.pop(key, None)
            if entry is not None:
                return _FtpData(entry[0])
        if c.resp_p in self.ftp_ports:
            return _FtpControl(chunk.uid)
        if _REQUEST_LINE.match(data) or (not chunk.is_orig and _STATUS_LINE.match(data)):
            return _Http(chunk.uid)
        if data[:4] in (b"GET ", b"POST", b"PUT ", b"HEAD") or data[:5] == b"HTTP/":
            return _Http(chunk.uid)  # a request line split across segments
        return None

    def expect_ftp(self, endpoint: tuple[str, int], control: _FtpControl, ts: float) -> None:
        self._ftp_expect[endpoint] = (control, ts + EXPECT_SECONDS)
        while len(self._ftp_expect) > MAX_EXPECTED:
            self._ftp_expect.popitem(last=False)

    def _expect_tftp(self, c: ConnId, transfer: _TftpTransfer, ts: float) -> None:
        self._tftp_expect[(c.orig_h, c.orig_p, c.resp_h)] = (transfer, ts + EXPECT_SECONDS)
        while len(self._tftp_expect) > MAX_EXPECTED:
            self._tftp_expect.popitem(last=False)

    def _tftp_match(self, c: ConnId) -> _TftpTransfer | None:
        for key in ((c.orig_h, c.orig_p, c.resp_h), (c.resp_h, c.resp_p, c.orig_h)):
            entry = self._tftp_expect.get(key)
            if entry is not None:
                return entry[0]
        return None


# ---------------------------------------------------------------------------- HTTP/1.x
class _HttpDirection:
    __slots__ = ("body", "chunked", "coding", "header", "info", "remaining", "state", "until_close")

    def __init__(self) -> None:
        self.state = "headers"  # headers | body | chunk_size | chunk_data | chunk_end | trailer
        self.header = bytearray()
        self.body: _Body | None = None
        self.remaining = 0
        self.chunked = False
        self.until_close = False
        self.coding = ""
        self.info: dict[str, Any] = {}


class _Http:
    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.dirs = {True: _HttpDirection(), False: _HttpDirection()}
        self.requests: list[tuple[str, str]] = []  # (method, path) waiting for responses
        self.broken = {True: False, False: False}
        self.last: dict[bool, StreamData] = {}

    def feed(self, ex: FileExtractor, chunk: StreamData, offset: int) -> list[ExtractedFile]:
        self.last[chunk.is_orig] = chunk
        if self.broken[chunk.is_orig]:
            return []
        out: list[ExtractedFile] = []
        d = self.dirs[chunk.is_orig]
        data = memoryview(chunk.data)
        pos = 0
        try:
            while pos < len(data):
                pos = self._step(ex, d, chunk, data, pos, offset, out)
        except ValueError:  # not HTTP after all, or framing we cannot follow
            self._drop(ex, d)
            self.broken[chunk.is_orig] = True
        return out

    def _step(
        self,
        ex: FileExtractor,
        d: _HttpDirection,
        chunk: StreamData,
        data: memoryview,
        pos: int,
        offset: int,
        out: list,
    ) -> int:
        if d.state == "headers":
            if not d.header:
                while pos < len(data) and data[pos] in (13, 10):
                    pos += 1  # stray CRLF between messages
                if pos == len(data):
                    return pos
            prev = len(d.header)
            d.header += data[pos : pos + MAX_HEADER + 4]
            idx = d.header.find(b"\r\n\r\n", max(0, prev - 3))
            if idx < 0:
                if len(d.header) > MAX_HEADER:
                    raise ValueError("header block too large")
                return pos + len(d.header) - prev
            used = idx + 4 - prev
            del d.header[idx + 4 :]
            self._headers(ex, d, chunk, offset + pos + used)
            return pos + used
        if d.state == "body":
            take = len(data) - pos if d.until_close else min(d.remaining, len(data) - pos)
            if d.body is not None:
                d.body.add(data[pos : pos + take])
            d.remaining -= take
            pos += take
            if not d.until_close and d.remaining == 0:
                self._complete(ex, d, chunk, offset + pos, out)
            return pos
        if d.state in ("chunk_size", "chunk_end", "trailer"):
            nl = bytes(data[pos : pos + MAX_LINE]).find(b"\n")
            if nl < 0:
                d.header += data[pos:]
                if len(d.header) > MAX_LINE:
                    raise ValueError("chunk line too long")
                return len(data)
            line = bytes(d.header) + bytes(data[pos : pos + nl])
            d.header.clear()
            pos += nl + 1
            line = line.strip()
            if d.state == "chunk_end":
                d.state = "chunk_size"
            elif d.state == "chunk_size":
                size = int(line.split(b";", 1)[0] or b"x", 16)  # ValueError when not hex
                if size == 0:
                    d.state = "trailer"
                else:
                    d.remaining = size
                    d.state = "chunk_data"
            elif not line:  # empty line ends the trailer section
                self._complete(ex, d, chunk, offset + pos, out)
            return pos
        if d.state == "chunk_data":
            take = min(d.remaining, len(data) - pos)
            if d.body is not None:
                d.body.add(data[pos : pos + take])
            d.remaining -= take
            pos += take
            if d.remaining == 0:
                d.state = "chunk_end"
            return pos
        raise ValueError(d.state)

    def _headers(self, ex: FileExtractor, d: _HttpDirection, chunk: StreamData, body_at: int):
        text = bytes(d.header).decode("latin-1")
        d.header.clear()
        lines = text.split("\r\n")
        while lines and not lines[0]:
            lines.pop(0)  # stray CRLF between messages
        first = lines[0] if lines else ""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        d.info = {}
        has_body = True
        if chunk.is_orig:
            parts = first.split(" ")
            if len(parts) < 3 or not parts[2].startswith("HTTP/"):
                raise ValueError("not a request line")
            method, path = parts[0], parts[1]
            if len(self.requests) < 64:
                self.requests.append((method, path))
            d.info = {"method": method, "uri": clean_name(path)}
            name = _path_name(path) if method == "PUT" else None  # a POST names a script
            has_body = "content-length" in headers or "chunked" in headers.get(
                "transfer-encoding", ""
            )
        else:
            m = _STATUS_LINE.match(first.encode("latin-1"))
            if m is None:
                raise ValueError("not a status line")
            status = int(m.group(1))
            if status < 200:
                d.state = "headers"  # 1xx: the real response follows
                return
            method, path = self.requests.pop(0) if self.requests else ("", "")
            d.info = {"status": status, "method": method or None, "uri": clean_name(path)}
            name = _path_name(path)
            has_body = method != "HEAD" and status not in (204, 304)
        disposition = _FILENAME.search(headers.get("content-disposition", ""))
        if disposition:
            name = clean_name(unquote(disposition.group(1)))
        if headers.get("content-type"):
            d.info["content_type"] = clean_name(headers["content-type"])
        d.info["name"] = name
        d.coding = headers.get("content-encoding", "").lower()
        d.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        d.until_close = False
        if not has_body:
            d.state = "headers"
            return
        if d.chunked:
            d.state = "chunk_size"
        elif "content-length" in headers:
            length = int(headers["content-length"].split(",")[0])
            if length < 0:
                raise ValueError("negative length")
            if length == 0:
                d.state = "headers"
                return
            d.remaining = length
            d.state = "body"
        else:
            d.until_close = True
            d.state = "body"
        d.body = ex.open_body(body_at)

    def _complete(
        self, ex: FileExtractor, d: _HttpDirection, chunk: StreamData, end: int, out: list
    ) -> None:
        body, d.body = d.body, None
        d.state = "headers"
        if body is None:
            return
        ex.close_body()
        if not body.seen:
            return
        data = bytes(body.buf)
        info = dict(d.info)
        name = info.pop("name", None)
        if d.coding in ("gzip", "x-gzip", "deflate"):
            decoded = _inflate(data, ex.settings.max_file_bytes)
            if decoded is not None:
                info["content_encoding"] = d.coding
                data = decoded
        out.append(
            ExtractedFile(
                "http",
                name,
                data,
                body.seen,
                body.seen > body.limit or len(data) >= body.limit,
                chunk.uid,
                chunk.conn,
                chunk.is_orig,
                body.start,
                end,
                chunk.ts,
                chunk.frame,
                detail=info,
            )
        )

    def _drop(self, ex: FileExtractor, d: _HttpDirection) -> None:
        if d.body is not None:
            d.body = None
            ex.close_body()

    def finish(self, ex: FileExtractor) -> list[ExtractedFile]:
        out: list[ExtractedFile] = []
        for is_orig, d in self.dirs.items():
            if d.body is not None and d.until_close and self.last.get(is_orig):
                chunk = self.last[is_orig]
                self._complete(ex, d, chunk, d.body.start + d.body.seen, out)
            else:
                self._drop(ex, d)
        return out


def _path_name(path: str) -> str | None:
    base = path.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return clean_name(unquote(base)) if base else None


def _inflate(data: bytes, limit: int) -> bytes | None:
    for wbits in (47, -15):  # gzip or zlib (auto), then raw deflate
        try:
            d = zlib.decompressobj(wbits)
            return d.decompress(data, limit)
        except zlib.error:
            continue
    return None


# ---------------------------------------------------------------------------- FTP
class _FtpControl:
    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.lines = {True: bytearray(), False: bytearray()}
        self.command: tuple[str, str | None] | None = None  # (RETR|STOR|..., file name)

    def feed(self, ex: FileExtractor, chunk: StreamData, offset: int) -> list[ExtractedFile]:
        buf = self.lines[chunk.is_orig]
        buf += chunk.data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LINE:
                    buf.clear()
                break
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            self._line(ex, chunk, line)
        return []

    def _line(self, ex: FileExtractor, chunk: StreamData, line: bytes) -> None:
        c = chunk.conn
        if chunk.is_orig:
            verb = line[:4].upper()
            arg = line[5:] if len(line) > 5 else b""
            if verb == b"PORT":
                m = _PASV.search(arg)
                if m:
                    ex.expect_ftp(_endpoint(m), self, chunk.ts)
            elif verb == b"EPRT":
                m = _EPRT.match(line)
                if m:
                    ex.expect_ftp((m.group(2).decode(), int(m.group(3))), self, chunk.ts)
            elif verb in (b"RETR", b"STOR", b"STOU", b"APPE"):
                self.command = (verb.decode(), clean_name(arg) if arg else None)
            return
        if line.startswith(b"227"):
            m = _PASV.search(line)
            if m:
                ex.expect_ftp(_endpoint(m), self, chunk.ts)
        elif line.startswith(b"229"):
            m = _EPSV.search(line)
            if m:
                ex.expect_ftp((c.resp_h, int(m.group(1))), self, chunk.ts)

    def finish(self, ex: FileExtractor) -> list[ExtractedFile]:
        return []


def _endpoint(m: re.Match[bytes]) -> tuple[str, int]:
    g = [int(x) for x in m.groups()]
    return f"{g[0]}.{g[1]}.{g[2]}.{g[3]}", g[4] * 256 + g[5]


class _FtpData:
    def __init__(self, control: _FtpControl) -> None:
        self.control = control
        self.command: tuple[str, str | None] | None = None
        self.bodies: dict[bool, _Body | None] = {}
        self.last: dict[bool, tuple[StreamData, int]] = {}

    def feed(self, ex: FileExtractor, chunk: StreamData, offset: int) -> list[ExtractedFile]:
        if self.command is None:
            self.command = self.control.command or ("", None)
        if self.command[0] not in ("RETR", "STOR", "STOU", "APPE"):
            return []  # a directory listing
        if chunk.is_orig not in self.bodies:
            self.bodies[chunk.is_orig] = ex.open_body(offset)
        body = self.bodies[chunk.is_orig]
        if body is not None:
            body.add(chunk.data)
        self.last[chunk.is_orig] = (chunk, offset + len(chunk.data))
        return []

    def finish(self, ex: FileExtractor) -> list[ExtractedFile]:
        out = []
        for is_orig, body in self.bodies.items():
            if body is None:
                continue
            ex.close_body()
            chunk, end = self.last[is_orig]
            verb, name = self.command or ("", None)
            out.append(
                ExtractedFile(
                    "ftp",
                    name,
                    bytes(body.buf),
                    body.seen,
                    body.seen > body.limit,
                    chunk.uid,
                    chunk.conn,
                    is_orig,
                    body.start,
                    end,
                    chunk.ts,
                    chunk.frame,
                    detail={"command": verb, "control_uid": self.control.uid},
                )
            )
        self.bodies.clear()
        return out


# ---------------------------------------------------------------------------- TFTP
class _TftpTransfer:
    """One RRQ/WRQ (RFC 1350) and its options (RFC 2347/2348 blksize)."""

    def __init__(self, op: str, name: str | None, mode: str, blksize: int, uid: str) -> None:
        self.op = op
        self.name = name
        self.mode = mode
        self.blksize = blksize
        self.request_uid = uid
        self.done = False

    @staticmethod
    def parse_request(chunk: StreamData) -> _TftpTransfer | None:
        data = chunk.data
        if len(data) < 4 or data[0] != 0 or data[1] not in (1, 2):
            return None
        fields = data[2:].split(b"\x00")
        if len(fields) < 3:
            return None
        name, mode = fields[0], fields[1].decode("ascii", "replace").lower()
        if not name or mode not in ("octet", "netascii", "mail"):
            return None
        opts = fields[2:]
        blksize = TFTP_BLOCK
        for key, value in zip(opts[::2], opts[1::2], strict=False):
            if key.lower() == b"blksize" and value.isdigit():
                blksize = max(8, min(int(value), 65464))
        return _TftpTransfer(
            "RRQ" if data[1] == 1 else "WRQ", clean_name(name), mode, blksize, chunk.uid
        )


class _TftpData:
    def __init__(self, transfer: _TftpTransfer) -> None:
        self.t = transfer
        self.body: _Body | None = None
        self.opened = False
        self.next_block = 1
        self.last: tuple[StreamData, int] | None = None
        self.is_orig: bool | None = None
        self.end = 0

    def feed(self, ex: FileExtractor, chunk: StreamData, offset: int) -> list[ExtractedFile]:
        data = chunk.data
        if self.t.done or len(data) < 4 or data[0] != 0:
            return []
        op = data[1]
        if op == 6:  # OACK: the server accepted options
            opts = data[2:].split(b"\x00")
            for key, value in zip(opts[::2], opts[1::2], strict=False):
                if key.lower() == b"blksize" and value.isdigit():
                    self.t.blksize = max(8, min(int(value), 65464))
            return []
        if op == 5:  # ERROR: the transfer is over
            return self._finish(ex, False)
        if op != 3:
            return []
        block = data[2] << 8 | data[3]
        if block != self.next_block:
            return []  # duplicate or out of order (TFTP is lock-step: a resend)
        if not self.opened:
            self.opened = True
            self.body = ex.open_body(offset + 4)
            self.is_orig = chunk.is_orig
        payload = data[4:]
        if self.body is not None:
            self.body.add(payload)
        self.next_block = (block + 1) & 0xFFFF
        self.last = (chunk, offset + len(data))
        if len(payload) < self.t.blksize:
            return self._finish(ex, True)
        return []

    def _finish(self, ex: FileExtractor, complete: bool) -> list[ExtractedFile]:
        self.t.done = True
        body, self.body = self.body, None
        if body is None or self.last is None:
            return []
        ex.close_body()
        if not body.seen:
            return []
        chunk, end = self.last
        return [
            ExtractedFile(
                "tftp",
                self.t.name,
                bytes(body.buf),
                body.seen,
                body.seen > body.limit,
                chunk.uid,
                chunk.conn,
                chunk.is_orig,
                body.start,
                end,
                chunk.ts,
                chunk.frame,
                transport="udp",
                detail={
                    "operation": self.t.op,
                    "mode": self.t.mode,
                    "complete": complete,
                    "request_uid": self.t.request_uid,
                },
            )
        ]

    def finish(self, ex: FileExtractor) -> list[ExtractedFile]:
        return self._finish(ex, False) if not self.t.done else []
