"""Live capture from network interfaces: AF_PACKET sockets with a kernel BPF filter.

``LiveSource(["br0", "br1"], bpf="tcp or arp")`` yields ``(ts, linktype, frame)`` like a
capture file does, so ``Pipeline.run_packets`` treats live traffic exactly as ``analyze``
treats a pcap. One raw ``AF_PACKET`` socket per interface (Linux ``packet(7)``):

- the BPF filter is compiled with scapy (libpcap's compiler) and attached in the kernel
  (``SO_ATTACH_FILTER``), so filtered-out frames never reach Python;
- the interface is put in promiscuous mode for the socket's lifetime
  (``PACKET_ADD_MEMBERSHIP``), which a Linux bridge needs to hand over frames it forwards
  between its ports;
- timestamps are the kernel's receive time (``SO_TIMESTAMPNS``), not the time Python got
  around to reading the frame;
- frames the capturing host sends itself (``PACKET_OUTGOING``) are skipped, so a frame is
  seen once;
- the kernel's counters (``PACKET_STATISTICS``: frames that passed the filter, frames dropped
  because the socket buffer was full) are read while capturing (every ``stats_interval``
  seconds by the capture loop, and whenever ``read_kernel_stats()`` is called, e.g. by a
  metrics scrape) and at the end. The kernel resets them at each read, so they are
  accumulated, per interface (``kernel_counters()``) and in total (``stats()``), under a lock:
  any thread may read them.

Iteration ends when ``stop()`` is called (from a signal handler, another thread or the
consumer) or when an interface goes away. Frames are read in batches from every readable
socket; frames of different interfaces are interleaved in arrival order.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from sentinel.errors import CaptureError

log = logging.getLogger(__name__)
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35  # also SCM_TIMESTAMPNS
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
LINKTYPE_ETHERNET = 1
MAX_FRAME = 65535
BATCH = 256
_TIMESPEC = struct.Struct("qq")
_STATS = struct.Struct("II")


def _attach_bpf(sock: socket.socket, bpf: str) -> None:
    """Compile ``bpf`` (tcpdump syntax) for Ethernet with scapy and attach it in the kernel."""
    from scapy.arch.common import compile_filter, free_filter
    from scapy.libs.structures import sock_fprog

    try:
        program = compile_filter(bpf, linktype=LINKTYPE_ETHERNET)
    except Exception as exc:  # scapy raises its own exception types
        raise CaptureError(f"bad BPF filter {bpf!r}: {exc}") from None
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(program.bf_len, program.bf_insns)
        )
    finally:
        free_filter(program)


class LiveSource:
    """Frames from one or more interfaces (see the module docstring); needs CAP_NET_RAW."""

    def __init__(
        self,
        interfaces: list[str],
        bpf: str | None = None,
        promisc: bool = True,
        buffer_bytes: int = 16 << 20,
        stats_interval: float = 1.0,
    ) -> None:
        if not interfaces:
            raise CaptureError("no interface to capture from")
        self.interfaces = list(interfaces)
        self.bpf = bpf
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.frames = 0
        self.stats_interval = stats_interval
        # interface -> [packets, drops] accumulated from PACKET_STATISTICS (reset by reads).
        self._kernel: dict[str, list[int]] = {name: [0, 0] for name in self.interfaces}
        self._stats_lock = threading.Lock()
        self._stopped = threading.Event()
        self._socks: list[tuple[str, socket.socket]] = []
        try:
            for name in self.interfaces:
                self._socks.append((name, self._open(name, bpf, promisc, buffer_bytes)))
        except BaseException:
            self.close()
            raise
        # A self-pipe wakes the poll loop at once when stop() is called.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    @staticmethod
    def _open(name: str, bpf: str | None, promisc: bool, buffer_bytes: int) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureError("live capture needs root (CAP_NET_RAW)") from None
        try:
            if bpf:
                _attach_bpf(sock, bpf)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((name, ETH_P_ALL))
            if promisc:
                index = socket.if_nametoindex(name)
                mreq = struct.pack("IHH8s", index, PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setblocking(False)
            # Frames queued between socket() and bind() came from every interface: drop them.
            while True:
                try:
                    sock.recv(MAX_FRAME)
                except BlockingIOError:
                    break
            _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))
        except OSError as exc:
            sock.close()
            raise CaptureError(f"cannot capture on {name}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        return sock

    def stop(self) -> None:
        """End the iteration (safe from signal handlers and other threads)."""
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def __iter__(self) -> Iterator[tuple[float, int, bytes]]:
        poller = select.poll()
        by_fd: dict[int, socket.socket] = {}
        for _name, sock in self._socks:
            poller.register(sock.fileno(), select.POLLIN)
            by_fd[sock.fileno()] = sock
        poller.register(self._wake_r.fileno(), select.POLLIN)
        cmsg_size = socket.CMSG_SPACE(_TIMESPEC.size)
        next_stats = time.monotonic() + self.stats_interval
        try:
            while not self._stopped.is_set():
                try:
                    ready = poller.poll(500)
                except InterruptedError:
                    continue
                if self.stats_interval and time.monotonic() >= next_stats:
                    self.read_kernel_stats()
                    next_stats = time.monotonic() + self.stats_interval
                for fd, events in ready:
                    sock = by_fd.get(fd)
                    if sock is None:
                        continue
                    if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        self._stopped.set()  # the interface went away
                        break
                    for _ in range(BATCH):
                        try:
                            frame, ancdata, _flags, addr = sock.recvmsg(MAX_FRAME, cmsg_size)
                        except BlockingIOError:
                            break
                        except OSError as exc:
                            if exc.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
                                self._stopped.set()
                                break
                            raise
                        if addr[2] == PACKET_OUTGOING:
                            continue
                        ts = None
                        for level, kind, data in ancdata:
                            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                                sec, nsec = _TIMESPEC.unpack_from(data)
                                ts = sec + nsec * 1e-9
                        if ts is None:
                            ts = time.time()
                        self.frames += 1
                        yield ts, LINKTYPE_ETHERNET, frame
        finally:
            self.read_kernel_stats()

    def read_kernel_stats(self) -> int:
        """Read and accumulate the kernel's counters now (any thread); the new drops."""
        new_drops = 0
        with self._stats_lock:
            for name, sock in self._socks:
                try:
                    packets, drops = _STATS.unpack(
                        sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
                    )
                except OSError:  # closed, or the interface went away
                    continue
                # The kernel resets its counters at each read; tp_packets includes the drops.
                counters = self._kernel[name]
                counters[0] += packets
                counters[1] += drops
                self.kernel_packets += packets
                self.kernel_drops += drops
                new_drops += drops
                if drops:
                    log.warning(
                        "%s: the kernel dropped %d frames (socket buffer full)", name, drops
                    )
        return new_drops

    def kernel_counters(self) -> dict[str, tuple[int, int]]:
        """Interface -> (packets, drops) counted by the kernel so far (as last read)."""
        with self._stats_lock:
            return {name: (c[0], c[1]) for name, c in self._kernel.items()}

    def stats(self) -> dict[str, Any]:
        """What the kernel counted since the sockets were opened (as last read)."""
        return {
            "interfaces": self.interfaces,
            "bpf": self.bpf,
            "frames": self.frames,
            "kernel_packets": self.kernel_packets,
            "kernel_drops": self.kernel_drops,
            "kernel_by_interface": {
                name: {"packets": p, "drops": d} for name, (p, d) in self.kernel_counters().items()
            },
        }

    def close(self) -> None:
        with self._stats_lock:
            for _name, sock in self._socks:
                sock.close()
            self._socks = []
        for s in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if s is not None:
                s.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
