"""The live OT feed (``sentinel.decode.tshark.LiveFeed``) and the tshark worker fed by it:
frames selected by port, a bounded queue that drops instead of waiting, a pcapng stream that
real tshark reads with the sensor's frame numbers, and events that come out while the feed is
still open (a live run cannot wait for EOF)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from sentinel.decode.ot_settings import OTSettings
from sentinel.decode.tshark import LiveFeed, OTInput, TsharkSource, tshark_command
from tests.craft import Conversation, adu, write
from tests.ot.craft import dnp3_reused_tuple

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def _frames(pcap: Path) -> list[bytes]:
    return [bytes(p) for p in rdpcap(str(pcap))]


def test_offer_keeps_ot_frames_and_drops_when_full(tmp_path: Path) -> None:
    dnp3 = _frames(dnp3_reused_tuple(tmp_path / "dnp3.pcap"))
    conv = Conversation(client="192.0.2.10", server="192.0.2.20", sport=41000)
    conv.exchange(adu(1, 1, b"\x03\x00\x00\x00\x01"), adu(1, 1, b"\x03\x02\x00\x07"))
    modbus = _frames(write(tmp_path / "modbus.pcap", conv.packets))
    feed = LiveFeed(OTSettings().server_ports(), max_frames=4)
    for n, frame in enumerate(modbus, 1):
        feed.offer(n, 1.0, frame)
    assert (feed.passed, feed.dropped) == (0, 0)  # port 502 is not tshark's
    for n, frame in enumerate(dnp3, 100):
        feed.offer(n, 1.0, frame)  # nobody writes yet: the queue fills, then drops
    assert feed.passed == 4
    assert feed.dropped == len(dnp3) - 4
    assert feed.offered == len(modbus) + len(dnp3)
    feed.disable()
    feed.offer(1, 1.0, dnp3[0])
    assert feed.offered == len(modbus) + len(dnp3)  # disabled: not even looked at


@needs_tshark
def test_stream_is_pcapng_with_the_sensor_frame_numbers(tmp_path: Path) -> None:
    dnp3 = _frames(dnp3_reused_tuple(tmp_path / "dnp3.pcap"))
    feed = LiveFeed(OTSettings().server_ports())
    read_fd, write_fd = os.pipe()
    feed.attach(os.fdopen(write_fd, "wb"))
    for n, frame in enumerate(dnp3, 1000):
        feed.offer(n, 1_700_000_000.0 + n, frame)
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b""))
    )
    reader.start()
    feed.close()  # writes what is queued, then EOF
    reader.join(30)
    os.close(read_fd)
    path = tmp_path / "fed.pcapng"
    path.write_bytes(b"".join(chunks))
    out = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.comment",
            "-e",
            "dnp3.al.func",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    comments = [line.split("\t") for line in out]
    assert len(comments) == len(dnp3) == feed.written
    assert [int(c[0].split()[0]) for c in comments] == list(range(1000, 1000 + len(dnp3)))
    assert {c[1] for c in comments if c[1]} == {"1", "13", "129"}  # READ, COLD_RESTART, RESPONSE


@needs_tshark
def test_events_arrive_while_the_feed_is_open(tmp_path: Path) -> None:
    settings = OTSettings()
    feed = LiveFeed(settings.server_ports())
    source = OTInput(interfaces=("test0",), feed=feed)
    cmd = tshark_command(shutil.which("tshark") or "tshark", settings, source)
    assert cmd[1:5] == ["-n", "-r", "-", "-l"]
    tshark = TsharkSource(cmd, settings, source)
    try:
        for n, frame in enumerate(_frames(dnp3_reused_tuple(tmp_path / "dnp3.pcap")), 1):
            feed.offer(n, 1_700_000_000.0 + n, frame)
        events = []
        deadline = time.monotonic() + 60  # a deadline for the event, not a timing assertion
        while len(events) < 4 and time.monotonic() < deadline:
            events += tshark.poll()
            time.sleep(0.05)
        assert not tshark.eof  # the feed is open: tshark still runs
        assert [(e.frame, e.function) for _, e in events] == [
            (4, "READ"),
            (5, "RESPONSE"),
            (13, "COLD_RESTART"),
            (14, "RESPONSE"),
        ]
        assert events[2][1].ts == 1_700_000_013.0  # the sensor's time stamp, not tshark's
        feed.close()
        assert list(tshark.wait(time.monotonic() + 30)) == []
        assert tshark.eof and tshark.end is not None and tshark.end["returncode"] == 0
    finally:
        tshark.close()
        feed.close()
