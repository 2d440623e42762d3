"""A local, single-node Elasticsearch for trying Sentinel out and for the test suite.

``sentinel es dev start`` downloads the pinned integ-test distribution of Elasticsearch from
Maven Central (``org.elasticsearch.distribution.integ-test-zip:elasticsearch``), checks it
against both the published ``.sha512`` and the checksum pinned here, unpacks it once into the
cache, and runs one node on a free loopback port. Choices, written down:

- **Version.** 8.19.21 is the newest integ-test-zip on Maven Central (9.x is not published
  there). It runs on the machine's default Java 17 (Elasticsearch 8 needs 17 or later); the
  Python client is pinned to the same major (``elasticsearch>=8.13,<9``).
- **What the distribution holds.** Only ``x-pack-core``, ``x-pack-security``,
  ``transport-netty4`` and ``apm``: security (users, TLS) works, but there is no ILM, no data
  streams, no ingest pipelines, no painless and no ``mapper-extras`` (so no
  ``match_only_text``) and API keys cannot be created (the ``.security`` index needs
  ``analysis-common``). Sentinel's templates and sink are written to work on it and on a full
  distribution alike; ``sentinel es setup`` says when ILM is missing.
- **Security.** On, with a generated password for the ``elastic`` superuser (the keystore's
  ``bootstrap.password``) and TLS on HTTP and transport with a CA and node certificate made by
  the distribution's own ``elasticsearch-certutil``. A distribution without the security
  module or without certutil runs without it (``password``/``ca_certs`` are then null).
- **Root.** Elasticsearch refuses to run as root. When started by root (as CI is), the node
  runs as the system user ``sentinel-es`` (``$SENTINEL_ES_USER``), created with ``useradd``
  on first use; every directory it needs is handed to that user. That user cannot enter
  root's home, so for root the unpacked distribution and the default node directory live in
  ``/var/lib/sentinel-es`` unless the cache (``$SENTINEL_CACHE``) is reachable by others. The
  zip itself is always cached in ``$SENTINEL_CACHE`` or ``~/.cache/sentinel``.
- **Memory.** A 512 MiB heap (``-Xms512m -Xmx512m``): enough for a sensor's data and kind to
  a two-core machine.

One node directory holds ``config/`` (with ``certs/``), ``logs/``, ``tmp/``, ``data/`` (unless
``--data DIR`` keeps the data elsewhere) and ``node.json`` (url, credentials, pid). The node's
HTTP port is chosen once and kept, so a node that is killed and restarted keeps its URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
import zipfile
from base64 import b64encode
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sentinel.errors import SentinelError

log = logging.getLogger(__name__)

ES_VERSION = "8.19.21"
# Published by Maven Central beside the zip (elasticsearch-8.19.21.zip.sha512), pinned here so
# that a tampered mirror is noticed even if it serves a matching .sha512.
PINNED_SHA512 = {
    "8.19.21": "cf6b0a93860d329937ae7f913ec5073b0c726c77639764b93fc83a304aa1dd9d"
    "4defcfa2849948eea3b0b47c2065f994908603939fc2a4774c9c4d868c5ec1dd",
}
MAVEN_URL = "https://repo1.maven.org/maven2"
ARTIFACT = "org/elasticsearch/distribution/integ-test-zip/elasticsearch/{v}/elasticsearch-{v}.zip"
ES_USER = "sentinel-es"
SYSTEM_BASE = Path("/var/lib/sentinel-es")
HEAP = "512m"
MIN_JAVA = 17
START_TIMEOUT = 180.0
JVM_DIR = Path("/usr/lib/jvm")


class DevNodeError(SentinelError):
    """The local node could not be downloaded, started or stopped."""


@dataclass
class NodeInfo:
    """What a client needs to reach the node (the JSON that ``sentinel es dev start`` prints)."""

    url: str
    username: str | None
    password: str | None
    ca_certs: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# -- where things live


def cache_dir() -> Path:
    """``$SENTINEL_CACHE`` or ``~/.cache/sentinel``: downloads are kept here."""
    env = os.environ.get("SENTINEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sentinel"


def _reachable_by_others(path: Path) -> bool:
    """Can a user who is neither owner nor in the group enter every directory of ``path``?"""
    path = path.resolve()
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except FileNotFoundError:
            continue  # created later with mode 755
        if not mode & stat.S_IXOTH:
            return False
    return True


def run_base() -> Path:
    """Where unpacked distributions and the default node directory live (see module doc)."""
    base = cache_dir() / "elasticsearch"
    if os.geteuid() == 0 and not _reachable_by_others(base):
        return SYSTEM_BASE
    return base


def default_node_dir() -> Path:
    return run_base() / "dev-node"


# -- the distribution


def _fetch(url: str, dest: Path | None = None, timeout: float = 60.0) -> bytes:
    """GET ``url`` into ``dest`` (streamed) or into memory."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if dest is None:
                return resp.read()
            with open(dest, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            return b""
    except urllib.error.HTTPError as exc:
        raise DevNodeError(f"download failed: {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DevNodeError(f"download failed: {url}: {reason}") from None


def download(version: str = ES_VERSION) -> Path:
    """The verified zip of ``version`` in the cache, downloaded if it is not there yet."""
    folder = cache_dir() / "elasticsearch" / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / f"elasticsearch-{version}.zip"
    if zip_path.exists():
        return zip_path
    base = os.environ.get("SENTINEL_MAVEN_URL", MAVEN_URL).rstrip("/")
    url = f"{base}/{ARTIFACT.format(v=version)}"
    published = _fetch(url + ".sha512").decode("ascii", "replace").split()
    if not published or not re.fullmatch(r"[0-9a-f]{128}", published[0]):
        raise DevNodeError(f"no usable checksum published at {url}.sha512")
    expected = published[0]
    pinned = PINNED_SHA512.get(version)
    if pinned and pinned != expected:
        raise DevNodeError(
            f"the checksum published for Elasticsearch {version} differs from the one pinned "
            "in sentinel.es.dev; refusing to use it"
        )
    log.warning("downloading Elasticsearch %s from %s", version, base)
    part = zip_path.with_suffix(f".part{os.getpid()}")
    try:
        _fetch(url, part, timeout=600.0)
        digest = hashlib.sha512()
        with open(part, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise DevNodeError(f"checksum mismatch for {url}: the download is corrupt")
        part.replace(zip_path)
    finally:
        part.unlink(missing_ok=True)
    return zip_path


def distribution(version: str = ES_VERSION) -> Path:
    """The unpacked distribution (Elasticsearch home) of ``version``."""
    home = run_base() / f"elasticsearch-{version}"
    if (home / "bin" / "elasticsearch").exists():
        return home
    zip_path = download(version)
    home.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        home.parent.chmod(0o755)
    tmp = home.parent / f".unpack-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                target = tmp / info.filename
                if not target.resolve().is_relative_to(tmp.resolve()):
                    raise DevNodeError(f"unsafe path in {zip_path}: {info.filename}")
                zf.extract(info, tmp)
                mode = info.external_attr >> 16
                if mode and not info.is_dir():
                    target.chmod((mode & 0o777) | 0o444)  # zipfile drops the modes
                elif info.is_dir():
                    target.chmod(0o755)
        inner = tmp / f"elasticsearch-{version}"
        if not (inner / "bin" / "elasticsearch").exists():
            raise DevNodeError(f"{zip_path} is not an Elasticsearch distribution")
        for d in [inner, *(p for p in inner.rglob("*") if p.is_dir())]:
            d.chmod(0o755)
        try:
            inner.rename(home)
        except OSError:
            if not (home / "bin" / "elasticsearch").exists():  # not a concurrent unpack
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home


# -- Java


def _java_major(java_home: Path) -> int | None:
    java = java_home / "bin" / "java"
    if not java.exists():
        return None
    release = java_home / "release"
    text = release.read_text(errors="replace") if release.exists() else ""
    m = re.search(r'JAVA_VERSION="(\d+)', text)
    if not m:
        try:
            out = subprocess.run(
                [str(java), "-version"], capture_output=True, text=True, timeout=30
            ).stderr
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(r'version "(\d+)', out)
    return int(m.group(1)) if m else None


def find_java(explicit: str | None = None) -> Path:
    """A Java home that can run Elasticsearch 8 (17 or later).

    Tried in order: ``explicit``, ``$SENTINEL_ES_JAVA_HOME``, ``$ES_JAVA_HOME``, ``$JAVA_HOME``,
    the ``java`` on ``PATH``, then the JDKs under /usr/lib/jvm (oldest suitable first, since
    the default Java 17 starts Elasticsearch fastest here).
    """
    candidates: list[Path] = []
    for value in (
        explicit,
        os.environ.get("SENTINEL_ES_JAVA_HOME"),
        os.environ.get("ES_JAVA_HOME"),
        os.environ.get("JAVA_HOME"),
    ):
        if value:
            candidates.append(Path(value))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path).resolve().parent.parent)
    if JVM_DIR.is_dir():
        candidates += sorted(p for p in JVM_DIR.iterdir() if p.is_dir() and not p.is_symlink())
    for home in candidates:
        major = _java_major(home)
        if major is not None and major >= MIN_JAVA:
            return home
        if explicit and home == Path(explicit):
            raise DevNodeError(f"{explicit} is not a Java {MIN_JAVA}+ home")
    raise DevNodeError(f"no Java {MIN_JAVA} or later found (set SENTINEL_ES_JAVA_HOME to a JDK)")


# -- the unprivileged user (only when running as root)


def ensure_user(name: str) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd")
        if not useradd:
            raise DevNodeError(
                f"Elasticsearch cannot run as root and there is no user {name!r} "
                "(and no useradd to create it)"
            ) from None
        proc = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode not in (0, 9):  # 9: created meanwhile by someone else
            raise DevNodeError(f"useradd {name} failed: {proc.stderr.strip()}") from None
        pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), uid, gid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_is_elasticsearch(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"org.elasticsearch" in cmdline


# -- the node


class DevNode:
    """One local node in ``node_dir`` (see the module doc)."""

    def __init__(
        self,
        node_dir: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        version: str = ES_VERSION,
        java_home: str | None = None,
        heap: str = HEAP,
    ) -> None:
        self.dir = Path(node_dir) if node_dir else default_node_dir()
        self.dir = self.dir.absolute()
        self.data_dir = Path(data_dir).absolute() if data_dir else None
        self.version = version
        self.java_home = java_home
        self.heap = heap
        self.state_file = self.dir / "node.json"

    # state kept between commands
    def _state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        tmp.replace(self.state_file)

    @property
    def pid(self) -> int | None:
        try:
            pid = int((self.dir / "es.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_is_elasticsearch(pid) else None

    def info(self) -> NodeInfo | None:
        state = self._state()
        if not state:
            return None
        return NodeInfo(state["url"], state["username"], state["password"], state["ca_certs"])

    # setup of the node directory (once)
    def _prepare(self, home: Path, java: Path) -> dict[str, Any]:
        state = self._state()
        if state and (self.dir / "config" / "elasticsearch.yml").exists():
            if self.data_dir and state.get("data") != str(self.data_dir):
                state["data"] = str(self.data_dir)
                self._write_config(home, state)
            return state
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        config = self.dir / "config"
        shutil.rmtree(config, ignore_errors=True)
        shutil.copytree(home / "config", config)
        security = (home / "modules" / "x-pack-security").is_dir()
        tls = security and (home / "bin" / "elasticsearch-certutil").exists()
        state = {
            "version": self.version,
            "port": _free_port(),
            "security": security,
            "tls": tls,
            "username": "elastic" if security else None,
            "password": secrets.token_urlsafe(18) if security else None,
            "data": str(self.data_dir) if self.data_dir else None,
        }
        env = self._tool_env(java)
        if tls:
            self._make_certs(home, env)
        if security:
            self._run_tool(
                home,
                env,
                ["elasticsearch-keystore", "add", "-x", "-f", "bootstrap.password"],
                stdin=state["password"],
            )
        scheme = "https" if tls else "http"
        state["url"] = f"{scheme}://127.0.0.1:{state['port']}"
        state["ca_certs"] = str(config / "certs" / "ca.crt") if tls else None
        self._write_config(home, state)
        self._write_state(state)
        return state

    def _tool_env(self, java: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "ES_JAVA_HOME": str(java),
            "ES_PATH_CONF": str(self.dir / "config"),
            "ES_TMPDIR": str(self.dir / "tmp"),
        }

    def _run_tool(
        self, home: Path, env: dict[str, str], argv: list[str], stdin: str | None = None
    ) -> None:
        (self.dir / "tmp").mkdir(exist_ok=True)
        proc = subprocess.run(
            [str(home / "bin" / argv[0]), *argv[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DevNodeError(f"{argv[0]} failed: {detail[0]}")

    def _make_certs(self, home: Path, env: dict[str, str]) -> None:
        certs = self.dir / "config" / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        work = self.dir / "tmp" / "certs"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        ca_zip, node_zip = work / "ca.zip", work / "node.zip"
        self._run_tool(
            home, env, ["elasticsearch-certutil", "ca", "--silent", "--pem", "--out", str(ca_zip)]
        )
        with zipfile.ZipFile(ca_zip) as zf:
            zf.extractall(work)
        self._run_tool(
            home,
            env,
            [
                "elasticsearch-certutil",
                "cert",
                "--silent",
                "--pem",
                "--ca-cert",
                str(work / "ca" / "ca.crt"),
                "--ca-key",
                str(work / "ca" / "ca.key"),
                "--ip",
                "127.0.0.1",
                "--ip",
                "::1",
                "--dns",
                "localhost",
                "--name",
                "node",
                "--out",
                str(node_zip),
            ],
        )
        with zipfile.ZipFile(node_zip) as zf:
            zf.extractall(work)
        shutil.copy(work / "ca" / "ca.crt", certs / "ca.crt")
        shutil.copy(work / "node" / "node.crt", certs / "node.crt")
        shutil.copy(work / "node" / "node.key", certs / "node.key")
        (certs / "ca.crt").chmod(0o644)
        shutil.rmtree(work, ignore_errors=True)  # the CA key is not kept

    def _write_config(self, home: Path, state: dict[str, Any]) -> None:
        config = self.dir / "config"
        data = state.get("data") or str(self.dir / "data")
        lines = [
            "# Written by `sentinel es dev start`; regenerated on each new node directory.",
            "cluster.name: sentinel-dev",
            "node.name: sentinel-dev",
            "network.host: 127.0.0.1",
            f"http.port: {state['port']}",
            "transport.port: 0",
            "discovery.type: single-node",
            f"path.data: {json.dumps(data)}",
            f"path.logs: {json.dumps(str(self.dir / 'logs'))}",
            # a developer laptop with a fullish disk must not turn the indices read-only
            "cluster.routing.allocation.disk.threshold_enabled: false",
            "action.destructive_requires_name: false",
        ]
        if state["security"]:
            lines.append("xpack.security.enabled: true")
        if state["tls"]:
            for layer in ("http", "transport"):
                lines += [
                    f"xpack.security.{layer}.ssl.enabled: true",
                    f"xpack.security.{layer}.ssl.key: certs/node.key",
                    f"xpack.security.{layer}.ssl.certificate: certs/node.crt",
                    f"xpack.security.{layer}.ssl.certificate_authorities: [certs/ca.crt]",
                ]
            lines.append("xpack.security.transport.ssl.verification_mode: certificate")
        (config / "elasticsearch.yml").write_text("\n".join(lines) + "\n")
        options = config / "jvm.options.d"
        options.mkdir(exist_ok=True)
        (options / "sentinel.options").write_text(f"-Xms{self.heap}\n-Xmx{self.heap}\n")

    # start / stop
    def start(self, timeout: float = START_TIMEOUT) -> NodeInfo:
        """Start the node (or return the running one) and wait until it answers."""
        if self.pid is not None:
            info = self.info()
            if info is not None and self._ready(info, 10.0):
                return info
        home = distribution(self.version)
        java = find_java(self.java_home)
        state = self._prepare(home, java)
        data = Path(state["data"]) if state.get("data") else self.dir / "data"
        for d in (self.dir / "logs", self.dir / "tmp", data):
            d.mkdir(parents=True, exist_ok=True)
        (self.dir / "es.pid").unlink(missing_ok=True)
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            uid, gid = ensure_user(os.environ.get("SENTINEL_ES_USER", ES_USER))
            if not _reachable_by_others(home) or not _reachable_by_others(self.dir):
                raise DevNodeError(
                    f"the unprivileged user cannot reach {home} or {self.dir}: choose "
                    "directories that others may enter (set SENTINEL_CACHE or --dir)"
                )
            if not _reachable_by_others(data.parent):
                raise DevNodeError(f"the unprivileged user cannot enter {data.parent}")
            _chown_tree(self.dir, uid, gid)
            _chown_tree(data, uid, gid)
            run_as = {"user": uid, "group": gid, "extra_groups": []}
        env = self._tool_env(java)
        launcher_log = self.dir / "logs" / "launcher.log"
        with open(launcher_log, "ab") as out:
            os.chmod(launcher_log, 0o644)
            proc = subprocess.run(
                [str(home / "bin" / "elasticsearch"), "-d", "-p", str(self.dir / "es.pid")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                timeout=timeout,
                check=False,
                **run_as,
            )
        if proc.returncode != 0:
            raise DevNodeError(
                f"Elasticsearch did not start (exit {proc.returncode}): "
                f"{_last_error(launcher_log, self.dir / 'logs' / 'sentinel-dev.log')}"
            )
        info = NodeInfo(state["url"], state["username"], state["password"], state["ca_certs"])
        state["java_home"] = str(java)
        self._write_state(state)
        if not self._ready(info, timeout):
            raise DevNodeError(
                f"Elasticsearch started but did not answer at {info.url} within {timeout:.0f} s"
            )
        return info

    def _ready(self, info: NodeInfo, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        url = f"{info.url}/_cluster/health?wait_for_status=yellow&timeout=5s"
        context = ssl.create_default_context(cafile=info.ca_certs) if info.ca_certs else None
        request = urllib.request.Request(url)
        if info.username:
            token = b64encode(f"{info.username}:{info.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        while time.monotonic() < deadline:
            if self.pid is None and (self.dir / "es.pid").exists():
                return False  # it died
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node's process (SIGKILL by default: the fault tests' crash)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, sig)

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the node; an ephemeral node (no ``--data``) loses its data. True if it ran."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_is_elasticsearch(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_is_elasticsearch(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _pid_is_elasticsearch(pid):
                    time.sleep(0.1)
        (self.dir / "es.pid").unlink(missing_ok=True)
        state = self._state()
        if state is not None and not state.get("data"):
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        return pid is not None


def _last_error(*logs: Path) -> str:
    """The most telling line of the node's logs, for a one-line error."""
    for path in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if "ERROR" in line or "Exception" in line or "error" in line.lower():
                return line.strip()[:400]
    return "see the logs in the node directory"
