"""The Elasticsearch sink: bulk indexing that never loses a finding.

How a document travels:

- **Findings** are appended to the spool's ``findings`` queue the moment the pipeline hands
  them over (a write-ahead log, fsync'd before each send and at close) and leave it only when
  Elasticsearch acknowledged them. They are sent oldest first and never dropped.
- **Modbus messages, flows and assets** are batched in memory (``batch_size`` documents) and
  sent by a background thread. When Elasticsearch cannot take them they go to the spool's
  ``bulk`` queue, which is bounded: past ``spool.max_bytes`` its oldest segments are dropped
  and counted.
- The **shipper thread** sends with ``elasticsearch.helpers.streaming_bulk``: bounded batches,
  retries with exponential backoff on 429 and 5xx (``max_retries``, ``initial_backoff``,
  ``max_backoff``). A connection error, a timeout, refused credentials or retries used up
  make the sink *offline*: everything goes to the spool, and the spool is tried again after a
  growing pause (up to ``max_backoff``). Once a send succeeds, the spool is drained in order
  (findings first), then live batches flow again. Documents refused for good (a mapping
  conflict, say) are logged with Elasticsearch's reason and counted; refused findings are
  also kept in ``rejected.jsonl`` in the spool directory.
- ``close`` (end of a run) sends what is left for at most ``close_timeout`` seconds; what is
  still unsent stays in the spool for the next run, ``sentinel es flush`` or a restarted
  sensor.

Every document has a deterministic ``_id`` (see ``documents``), so sending twice (a batch
that Elasticsearch took just before a connection broke) overwrites instead of duplicating.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch, helpers

from sentinel.es import setup as es_setup
from sentinel.es.client import connect, explain, scrub
from sentinel.es.config import EsSettings
from sentinel.es.documents import ASSETS, FINDINGS, FLOWS, MODBUS, DocumentBuilder, asset_update
from sentinel.es.spool import BULK, Spool, default_spool_dir, inspect
from sentinel.es.spool import FINDINGS as SPOOL_FINDINGS
from sentinel.sinks.base import Sink

log = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)
QUEUE_BATCHES = 4  # live batches waiting for the shipper before the pipeline waits
# Only what the sink reads from a bulk response: smaller responses parse faster.
FILTER_PATH = "errors,items.*._index,items.*._id,items.*.status,items.*.error"

Item = tuple[dict[str, Any], bytes]  # (bulk action, serialized document)


def encode(item: Item) -> bytes:
    """A spool line: the action, a tab, the document."""
    return orjson.dumps(item[0]) + b"\t" + item[1] + b"\n"


def decode(line: bytes) -> Item:
    action, _, source = line.rstrip(b"\n").partition(b"\t")
    return orjson.loads(action), source


def _kind_of(index: str) -> str:
    for kind in (FINDINGS, MODBUS, FLOWS):
        if index.startswith(f"sentinel-{kind}-"):
            return kind
    return ASSETS


@dataclass
class SendResult:
    sent: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None  # why nothing more could be sent (the sink goes offline)
    retry: list[Item] = field(default_factory=list)


class Sender:
    """Sends items with the official bulk helper and sorts out what happened to each."""

    def __init__(self, client: Elasticsearch, settings: EsSettings) -> None:
        self.client = client
        self.settings = settings
        s = settings.sink
        self.options: dict[str, Any] = {
            "chunk_size": s.batch_size,
            "max_chunk_bytes": s.max_batch_bytes,
            "max_retries": s.max_retries,
            "initial_backoff": s.initial_backoff,
            "max_backoff": s.max_backoff,
            "retry_on_status": RETRY_STATUS,
            "raise_on_error": False,
            "raise_on_exception": True,
            "yield_ok": False,
            "expand_action_callback": _identity,
            "filter_path": FILTER_PATH,
        }

    def send(self, items: list[Item]) -> SendResult:
        result = SendResult()
        failed: list[tuple[str, dict[str, Any]]] = []
        try:
            for _ok, info in helpers.streaming_bulk(self.client, items, **self.options):  # type: ignore[arg-type]
                op, detail = next(iter(info.items()))
                failed.append((op, detail))
        except (ApiError, TransportError) as exc:
            result.failure = explain(exc, self.settings)
            return result
        if not failed:
            result.sent = len(items)
            return result
        by_key = {(a[next(iter(a))]["_index"], a[next(iter(a))]["_id"]): (a, s) for a, s in items}
        for op, detail in failed:
            key = (detail.get("_index"), detail.get("_id"))
            status = detail.get("status")
            if status in RETRY_STATUS:
                item = by_key.get(key)
                if item is not None:
                    result.retry.append(item)
                continue
            error = detail.get("error")
            if isinstance(error, dict):
                reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
                caused = error.get("caused_by")
                if isinstance(caused, dict) and caused.get("reason"):
                    reason += f" (caused by {caused.get('type')}: {caused.get('reason')})"
            else:
                reason = str(error)
            item = by_key.get(key)
            result.rejected.append(
                {
                    "op": op,
                    "index": key[0],
                    "id": key[1],
                    "status": status,
                    "error": scrub(reason[:500], self.settings),
                    "source": orjson.loads(item[1]) if item else None,
                }
            )
        if result.retry:
            result.failure = (
                f"Elasticsearch at {self.settings.url} kept refusing {len(result.retry)} "
                f"documents with HTTP {sorted({str(d.get('status')) for _, d in failed})} after "
                f"{self.settings.sink.max_retries} retries"
            )
        result.sent = len(items) - len(result.retry) - len(result.rejected)
        return result


def _identity(item: Item) -> Item:
    return item


class ElasticsearchSink(Sink):
    """The pipeline's Elasticsearch sink (see the module doc).

    ``observer`` names this sensor in every document; ``site_of(ip)`` gives the site labels
    of an address (``SiteLabels.lookup``). ``client`` replaces the client built from
    ``settings`` (tests). The sink can serve several runs: ``close`` ends one, the next
    record starts the next.
    """

    id = "elasticsearch"

    def __init__(
        self,
        settings: EsSettings,
        observer: str = "sentinel",
        site_of: Callable[[str], dict[str, str] | None] | None = None,
        spool_dir: str | Path | None = None,
        client: Elasticsearch | None = None,
    ) -> None:
        self.settings = settings
        self.conf = settings.sink
        self.builder = DocumentBuilder(observer, site_of)
        self.kinds = frozenset(self.conf.send)
        self.spool_dir = Path(spool_dir or self.conf.spool.path or default_spool_dir())
        self._client = client
        self._spool: Spool | None = None
        self._shipper: _Shipper | None = None
        self._buffer: list[Item] = []
        self._lock = threading.Lock()
        self._findings_unsynced = 0
        self.counts: Counter[str] = Counter()  # documents handed to the sink, by kind
        self.stats: Counter[str] = Counter()  # sent, rejected, spooled, dropped...
        self.last_error: str | None = None
        self._templates_checked = False
        if MODBUS not in self.kinds:
            self.modbus = Sink.modbus.__get__(self)  # type: ignore[method-assign]
        if FLOWS not in self.kinds:
            self.flow = Sink.flow.__get__(self)  # type: ignore[method-assign]

    # -- the Sink interface (pipeline thread)
    def modbus(self, record: dict[str, Any]) -> None:
        index, doc_id, doc = self.builder.modbus(record)
        self._add({"index": {"_index": index, "_id": doc_id}}, doc)
        self.counts[MODBUS] += 1

    def flow(self, record: dict[str, Any]) -> None:
        index, doc_id, doc = self.builder.flow(record)
        self._add({"index": {"_index": index, "_id": doc_id}}, doc)
        self.counts[FLOWS] += 1

    def finding(self, document: dict[str, Any]) -> None:
        if FINDINGS not in self.kinds:
            return
        self._start()
        index, doc_id, doc = self.builder.finding(document)
        line = encode(({"index": {"_index": index, "_id": doc_id}}, orjson.dumps(doc)))
        self._spool.append(SPOOL_FINDINGS, [line], sync=False)  # type: ignore[union-attr]
        self.counts[FINDINGS] += 1
        self._findings_unsynced += 1
        if self._findings_unsynced >= self.conf.batch_size:
            self._spool.sync()  # type: ignore[union-attr]
            self._findings_unsynced = 0
            self._shipper.wake()  # type: ignore[union-attr]

    def assets(self, records: list[dict[str, Any]]) -> None:
        if ASSETS not in self.kinds:
            return
        for rec in records:
            index, doc_id, doc = self.builder.asset(rec)
            self._add({"update": {"_index": index, "_id": doc_id}}, asset_update(doc))
            self.counts[ASSETS] += 1

    def _add(self, action: dict[str, Any], doc: dict[str, Any]) -> None:
        if self._shipper is None:
            self._start()
        with self._lock:
            buffer = self._buffer
            buffer.append((action, orjson.dumps(doc)))
            if len(buffer) < self.conf.batch_size:
                return
            self._buffer = []
        self._shipper.put(buffer)  # type: ignore[union-attr]

    def take_partial(self) -> list[Item]:
        """The batch being filled (the shipper sends it when it has waited long enough)."""
        with self._lock:
            buffer, self._buffer = self._buffer, []
        return buffer

    # -- lifecycle
    @property
    def client(self) -> Elasticsearch:
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def _start(self) -> None:
        if self._shipper is not None:
            return
        if self._spool is None or self._spool.closed:
            spool = self.conf.spool
            self._spool = Spool(self.spool_dir, spool.max_bytes, spool.segment_bytes)
            self._dropped_at_start = self._spool.state.get("dropped", 0)
        self._shipper = _Shipper(self, self._spool, Sender(self.client, self.settings))
        self._shipper.start()

    def ensure_templates(self) -> None:
        """Install the index templates if the cluster lacks them (once; errors propagate)."""
        if self._templates_checked or not self.conf.setup_templates:
            return
        missing = es_setup.templates_missing(self.client)
        if missing:
            report = es_setup.setup(self.client)
            log.warning(
                "installed Sentinel's index templates on %s (%s)%s",
                self.settings.url,
                ", ".join(missing),
                "" if report.ilm else "; " + es_setup.NO_ILM_NOTE,
            )
        self._templates_checked = True

    def close(self) -> None:
        self._start()  # a run without records still drains an old spool
        shipper, spool = self._shipper, self._spool
        assert shipper is not None and spool is not None
        partial = self.take_partial()
        if partial:
            shipper.put(partial)
        spool.sync()
        shipper.stop(self.conf.close_timeout)
        self._shipper = None
        left = spool.depth()
        left_findings = spool.depth(SPOOL_FINDINGS)
        self.stats["dropped"] = spool.state.get("dropped", 0) - self._dropped_at_start
        spool.close()
        if left or self.stats["rejected"] or self.stats["dropped"]:
            parts = [f"{self.stats['sent']:,} documents indexed"]
            if left:
                parts.append(
                    f"{left:,} waiting in the spool {self.spool_dir} ({left_findings:,} "
                    "findings; `sentinel es flush` sends them)"
                )
            if self.stats["rejected"]:
                parts.append(f"{self.stats['rejected']:,} refused by Elasticsearch")
            if self.stats["dropped"]:
                parts.append(f"{self.stats['dropped']:,} Modbus/flow documents dropped")
            reason = f": {self.last_error}" if self.last_error else ""
            log.warning("elasticsearch: %s%s", "; ".join(parts), reason)
        else:
            log.info("elasticsearch: %s documents indexed", f"{self.stats['sent']:,}")

    def pending(self) -> int:
        """Documents waiting in the spool (findings and others)."""
        if self._spool is not None and not self._spool.closed:
            return self._spool.depth()
        info = inspect(self.spool_dir)
        return int(info[SPOOL_FINDINGS] + info[BULK])


class _Shipper(threading.Thread):
    """The background sender (see the module doc); the only thread that talks to the cluster."""

    def __init__(self, sink: ElasticsearchSink, spool: Spool, sender: Sender) -> None:
        super().__init__(name="sentinel-es-shipper", daemon=True)
        self.sink = sink
        self.spool = spool
        self.sender = sender
        self.conf = sink.conf
        self.queue: queue.Queue[list[Item] | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.online = True
        self.retry_at = 0.0
        self.backoff = self.conf.initial_backoff
        self.stopping = False
        self.deadline = float("inf")
        self.crashed = False
        self._next_partial = time.monotonic() + self.conf.flush_interval

    # -- called from the pipeline thread
    def put(self, batch: list[Item]) -> None:
        while True:
            if self.crashed or not self.is_alive():
                self._spool_items(batch)
                return
            try:
                self.queue.put(batch, timeout=1.0)
                return
            except queue.Full:
                continue

    def wake(self) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(None)

    def stop(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.stopping = True
        if not self.online:
            self.retry_at = 0.0  # one more try before giving up
        self.wake()
        self.join()

    # -- the thread
    def run(self) -> None:
        try:
            while not self._cycle():
                pass
        except Exception:  # a bug must not lose data: spool what is queued and say so
            self.crashed = True
            log.exception("the Elasticsearch shipper failed; documents stay in the spool")
        finally:
            self._spool_queued()

    def _cycle(self) -> bool:
        """One step; True when the shipper is done."""
        now = time.monotonic()
        if now >= self._next_partial or self.stopping:
            self._next_partial = now + self.conf.flush_interval
            partial = self.sink.take_partial()
            if partial:
                self._handle(partial)
        if not self.online and now < self.retry_at:
            if self.stopping:
                return True  # the one last try at stop failed: the rest stays spooled
            self._wait(self.retry_at - now)
            return False
        if self.stopping and now >= self.deadline:
            return True
        # online, or time to try again: findings first, then spooled bulk, then live batches
        if self.spool.depth(SPOOL_FINDINGS):
            self.spool.sync()
            self._send_spooled(SPOOL_FINDINGS)
            return False
        if self.spool.depth(BULK):
            self._spool_queued()  # keep the order: what waits in memory goes behind
            self._send_spooled(BULK)
            return False
        try:
            batch = self.queue.get(timeout=0.0 if self.stopping else self._idle_timeout())
        except queue.Empty:
            return self.stopping
        if batch:
            self._handle(batch)
        return False

    def _idle_timeout(self) -> float:
        return max(0.01, self._next_partial - time.monotonic())

    def _wait(self, seconds: float) -> None:
        """Offline: park live batches in the spool until it is time to try again."""
        try:
            batch = self.queue.get(timeout=min(seconds, self.conf.flush_interval))
        except queue.Empty:
            return
        if batch:
            self._spool_items(batch)

    def _handle(self, batch: list[Item]) -> None:
        if not self.online or self.spool.depth(BULK):
            self._spool_items(batch)
            return
        self._ensure_templates()
        if not self.online:
            self._spool_items(batch)
            return
        result = self.sender.send(batch)
        self._account(result, BULK)
        if result.failure:
            self._spool_items(result.retry if result.sent or result.rejected else batch)
            self._go_offline(result.failure)
        else:
            self._came_back()

    def _send_spooled(self, queue_name: str) -> bool:
        """Send the oldest spooled batch of ``queue_name``; True if it left the spool."""
        self._ensure_templates()
        if not self.online and time.monotonic() < self.retry_at:
            return False
        batch = self.spool.read(queue_name, self.conf.batch_size, self.conf.max_batch_bytes)
        if batch is None:
            return True
        items = [decode(line) for line in batch.lines]
        result = self.sender.send(items)
        if result.failure:
            self._go_offline(result.failure)
            return False
        self._account(result, queue_name)
        self.spool.ack(batch)
        self._came_back()
        return True

    def _ensure_templates(self) -> None:
        try:
            self.sink.ensure_templates()
        except ApiError as exc:
            if exc.meta.status == 403:
                self.sink._templates_checked = True
                log.warning(
                    "cannot check Sentinel's index templates (%s); run `sentinel es setup` "
                    "as an administrator",
                    explain(exc, self.sink.settings),
                )
            else:
                self._go_offline(explain(exc, self.sink.settings))
        except TransportError as exc:
            self._go_offline(explain(exc, self.sink.settings))

    def _account(self, result: SendResult, queue_name: str) -> None:
        stats = self.sink.stats
        stats["sent"] += result.sent
        if result.rejected:
            stats["rejected"] += len(result.rejected)
            findings = [r for r in result.rejected if _kind_of(str(r["index"])) == FINDINGS]
            if findings:
                self.spool.reject(findings)
            for r in result.rejected[:5]:
                log.error(
                    "Elasticsearch refused %s %s in %s (HTTP %s): %s",
                    _kind_of(str(r["index"])).rstrip("s"),
                    r["id"],
                    r["index"],
                    r["status"],
                    r["error"],
                )
            if len(result.rejected) > 5:
                log.error("... and %d more refused documents", len(result.rejected) - 5)
            first = result.rejected[0]
            self.sink.last_error = f"refused {first['id']} in {first['index']}: {first['error']}"
            self.spool.note(
                force=True,
                rejected=len(result.rejected),
                last_error=self.sink.last_error,
                last_error_at=time.time(),
            )

    def _go_offline(self, reason: str) -> None:
        self.sink.last_error = reason
        if self.online:
            log.warning("%s; documents are spooled to %s", reason, self.spool.path)
            self.backoff = self.conf.initial_backoff
        self.online = False
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, self.conf.max_backoff)
        self.spool.note(force=True, last_error=reason, last_error_at=time.time())

    def _came_back(self) -> None:
        if not self.online:
            left = self.spool.depth()
            log.warning("Elasticsearch is reachable again; sending %d spooled documents", left)
        self.online = True
        self.backoff = self.conf.initial_backoff
        self.spool.note(last_sent_at=time.time())

    def _spool_items(self, items: Iterable[Item]) -> None:
        lines = [encode(item) for item in items]
        if lines:
            self.spool.append(BULK, lines)
            self.sink.stats["spooled"] += len(lines)

    def _spool_queued(self) -> None:
        while True:
            try:
                batch = self.queue.get_nowait()
            except queue.Empty:
                return
            if batch:
                self._spool_items(batch)
