#!/usr/bin/env python3
"""Local tracewatch stack: a real single-node Kafka (KRaft) and a real Redis on loopback.

No Docker. Kafka runs from jars resolved once with Maven (deploy/local/pom.xml)
into a cache directory, or from an existing install in $KAFKA_HOME. Redis is the
machine's `redis-server`.

This file is stdlib-only on purpose: it has to run before the project itself is
pip-installed (e.g. first thing in CI).

    python3 deploy/local/stack.py up        # start (idempotent), wait until both answer
    python3 deploy/local/stack.py status    # show what is up (exit 0 = all up, 3 = not)
    python3 deploy/local/stack.py down      # stop what `up` started (idempotent)
    python3 deploy/local/stack.py down --purge   # ...and delete Kafka/Redis data

With TRACEWATCH_REDIS_CLUSTER=3, `up` also starts a 3-primary Redis Cluster (no replicas) on
consecutive ports from TRACEWATCH_REDIS_CLUSTER_PORT, creates it once with
`redis-cli --cluster create` and waits for cluster_state:ok; `--only redis-cluster` starts
just that (no Kafka, no single Redis).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
HOST = "127.0.0.1"
CLIENT_ID = "tracewatch-stack"
MIN_JAVA = 17  # Kafka 4.x brokers need Java 17+

APT_HINTS = {
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
}
CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # a cluster node also listens on port + 10000 (the cluster bus)
MAX_CLUSTER_NODES = 16
GROUPS = ("kafka", "redis", "redis-cluster")  # what `--only` selects


class StackError(Exception):
    """A failure with a message meant for the user (no traceback)."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- config


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name}={port} is out of range 1..65535")
    return port


def _env_cluster_size(name: str) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a number of cluster primaries") from None
    if n != 0 and not 3 <= n <= MAX_CLUSTER_NODES:
        raise StackError(
            f"{name}={n}: a Redis Cluster needs 3..{MAX_CLUSTER_NODES} primaries (0 or unset: no cluster)"
        )
    return n


def _env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


@dataclass(frozen=True)
class Config:
    kafka_port: int
    controller_port: int
    redis_port: int
    stack_dir: Path
    cache_dir: Path
    kafka_home: str  # raw $KAFKA_HOME ("" when unset)
    redis_cluster: int = 0  # number of Redis Cluster primaries (0: no cluster)
    redis_cluster_port: int = 7000  # first node's port; node i listens on this + i

    @classmethod
    def from_env(cls) -> Config:
        cfg = cls(
            kafka_port=_env_port("TRACEWATCH_KAFKA_PORT", 9092),
            controller_port=_env_port("TRACEWATCH_KAFKA_CONTROLLER_PORT", 9093),
            redis_port=_env_port("TRACEWATCH_REDIS_PORT", 6379),
            stack_dir=_env_path("TRACEWATCH_STACK_DIR", REPO_ROOT / ".stack"),
            cache_dir=_env_path("TRACEWATCH_CACHE_DIR", Path.home() / ".cache" / "tracewatch"),
            kafka_home=os.environ.get("KAFKA_HOME", "").strip(),
            redis_cluster=_env_cluster_size("TRACEWATCH_REDIS_CLUSTER"),
            redis_cluster_port=_env_port("TRACEWATCH_REDIS_CLUSTER_PORT", 7000),
        )
        ports = [cfg.kafka_port, cfg.controller_port, cfg.redis_port]
        if len(set(ports)) != len(ports):
            raise StackError(
                "TRACEWATCH_KAFKA_PORT, TRACEWATCH_KAFKA_CONTROLLER_PORT and "
                f"TRACEWATCH_REDIS_PORT must differ (got {ports})"
            )
        if cfg.redis_cluster:
            first, last = cfg.cluster_ports[0], cfg.cluster_ports[-1]
            if last + CLUSTER_BUS_OFFSET > 65535:
                raise StackError(
                    f"TRACEWATCH_REDIS_CLUSTER_PORT={first}: the cluster uses ports {first}..{last} and "
                    f"their bus ports (+{CLUSTER_BUS_OFFSET}), which must stay <= 65535"
                )
            used = set(cfg.cluster_ports) | {p + CLUSTER_BUS_OFFSET for p in cfg.cluster_ports}
            clash = sorted(used & set(ports))
            if clash:
                raise StackError(
                    f"TRACEWATCH_REDIS_CLUSTER_PORT={first}: the cluster's ports {first}..{last} and bus ports "
                    f"{first + CLUSTER_BUS_OFFSET}..{last + CLUSTER_BUS_OFFSET} collide with "
                    f"TRACEWATCH_KAFKA_PORT / TRACEWATCH_KAFKA_CONTROLLER_PORT / TRACEWATCH_REDIS_PORT ({clash})"
                )
        return cfg

    @property
    def cluster_ports(self) -> list[int]:
        return [self.redis_cluster_port + i for i in range(self.redis_cluster)]

    @property
    def cluster_seed(self) -> str:
        return f"redis+cluster://{HOST}:{self.redis_cluster_port}"

    # layout of the state directory
    @property
    def conf_dir(self) -> Path:
        return self.stack_dir / "conf"

    @property
    def run_dir(self) -> Path:
        return self.stack_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.stack_dir / "logs"

    @property
    def kafka_data(self) -> Path:
        return self.stack_dir / "kafka" / "data"

    @property
    def redis_data(self) -> Path:
        return self.stack_dir / "redis"

    @property
    def cluster_data(self) -> Path:
        return self.stack_dir / "redis-cluster"


def rel(p: Path) -> str:
    """Path for display: relative to the cwd when it is below it."""
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


# --------------------------------------------------------------------------- processes


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(pidfile: Path, pid: int) -> None:
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, pidfile)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def pid_cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def all_pids() -> Iterator[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    me = os.getpid()
    for name in names:
        if name.isdigit() and int(name) != me:
            yield int(name)


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.splitlines()[-lines:])


def rotate_log(path: Path) -> None:
    """Keep exactly one previous log (<name>.1) so the current one is about this start."""
    if path.exists() and path.stat().st_size > 0:
        os.replace(path, path.with_name(path.name + ".1"))


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another stack.py holding {what} ({rel(path)}) ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class ProtocolError(Exception):
    """The peer answered, but not like the service we expect."""


# --------------------------------------------------------------------------- Kafka wire protocol


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProtocolError("truncated Kafka response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def int8(self) -> int:
        return self._take(">b")

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def nullable_string(self) -> str | None:
        n = self.int16()
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise ProtocolError("truncated Kafka string")
        s = self.data[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise ProtocolError("unexpected null string")
        return s

    def array_len(self, limit: int = 100_000) -> int:
        n = self.int32()
        if n < -1 or n > limit:
            raise ProtocolError(f"implausible array length {n}")
        return max(n, 0)


def _kafka_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> _Reader:
    # Request header v1 (non-flexible): api_key, api_version, correlation_id, client_id.
    msg = struct.pack(">hhi", api_key, version, corr) + _kafka_string(CLIENT_ID) + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    if not 4 <= size <= 64 * 1024 * 1024:
        raise ProtocolError(f"not a Kafka response (frame size {size})")
    reader = _Reader(recv_exact(sock, size))
    got = reader.int32()  # response header v0: correlation_id
    if got != corr:
        raise ProtocolError(f"correlation id mismatch ({got} != {corr})")
    return reader


API_METADATA = 3
API_VERSIONS = 18


@dataclass
class KafkaInfo:
    api_count: int
    metadata_version: int | None = None
    brokers: list[tuple[int, str, int]] = field(default_factory=list)
    cluster_id: str | None = None
    controller_id: int | None = None

    def describe(self) -> str:
        if self.metadata_version is None:
            return f"ApiVersions ok ({self.api_count} APIs)"
        brokers = ", ".join(f"{b}@{h}:{p}" for b, h, p in self.brokers) or "none"
        return f"broker {brokers}, cluster {self.cluster_id}"


def kafka_probe(port: int, timeout: float = 3.0) -> KafkaInfo:
    """ApiVersions v0 then Metadata (v1..v8, whatever the broker supports) over a raw socket.

    Raises OSError when nothing listens / it times out, ProtocolError when the peer
    is not (yet) a working Kafka broker.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _kafka_call(sock, API_VERSIONS, 0, 1, b"")
        error = r.int16()
        versions: dict[int, tuple[int, int]] = {}
        for _ in range(r.array_len(1000)):
            key, lo, hi = r.int16(), r.int16(), r.int16()
            versions[key] = (lo, hi)
        if error != 0 or API_VERSIONS not in versions:
            raise ProtocolError(f"ApiVersions answered error_code={error}")
        info = KafkaInfo(api_count=len(versions))
        if API_METADATA not in versions:
            raise ProtocolError("broker does not offer the Metadata API")
        lo, hi = versions[API_METADATA]
        version = min(hi, 8)  # v9+ are "flexible" encodings; v1..v8 are enough here
        if version < max(lo, 1):
            return info  # cannot speak a Metadata version it accepts: ApiVersions must do

        body = struct.pack(">i", 0)  # topics: empty array (v1+: empty = no topics)
        if version >= 4:
            body += struct.pack(">b", 0)  # allow_auto_topic_creation
        if version >= 8:
            body += struct.pack(">bb", 0, 0)  # include cluster/topic authorized operations
        r = _kafka_call(sock, API_METADATA, version, 2, body)
        if version >= 3:
            r.int32()  # throttle_time_ms
        for _ in range(r.array_len(10_000)):
            node_id, host, bport = r.int32(), r.string(), r.int32()
            r.nullable_string()  # rack (v1+)
            info.brokers.append((node_id, host, bport))
        if version >= 2:
            info.cluster_id = r.nullable_string()
        info.controller_id = r.int32()
        r.array_len()  # topics (none requested)
        info.metadata_version = version
        return info


def redis_probe(port: int, timeout: float = 2.0) -> str:
    """RESP PING; returns 'PONG'. OSError if closed, ProtocolError for anything else."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            line += chunk
            if len(line) > 4096:
                break
    reply = line.split(b"\r\n", 1)[0].decode(errors="replace")
    if reply == "+PONG":
        return "PONG"
    raise ProtocolError(f"PING answered {reply[:120]!r}" if reply else "no answer to PING")


def redis_call(port: int, *args: str, timeout: float = 2.0) -> str:
    """One Redis command over RESP; the reply as text (simple, bulk or integer replies only).

    OSError if nothing answers, ProtocolError for an error reply or anything unexpected.
    """
    req = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(req)
        buf = b""
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise ProtocolError(f"connection closed before answering {args[0]}")
            buf += chunk
        head, rest = buf.split(b"\r\n", 1)
        kind, value = head[:1], head[1:].decode(errors="replace")
        if kind in (b"+", b":"):
            return value
        if kind == b"-":
            raise ProtocolError(f"{' '.join(args)}: {value}")
        if kind != b"$":
            raise ProtocolError(f"{' '.join(args)}: unexpected reply {head[:120]!r}")
        size = int(value)
        if size < 0:
            return ""
        if len(rest) < size + 2:
            rest += recv_exact(sock, size + 2 - len(rest))
        return rest[:size].decode(errors="replace")


def parse_info(text: str) -> dict[str, str]:
    """`key:value` lines of INFO / CLUSTER INFO."""
    return dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln and not ln.startswith("#"))


# --------------------------------------------------------------------------- tools


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise StackError(f"`{name}` not found on PATH. Install it: apt-get install -y {APT_HINTS[name]}")
    return path


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = need_tool("java")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {java} -version: {exc}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if m:
        major = int(m.group(1))
        if major == 1 and m.group(2):
            major = int(m.group(2))
        if major < MIN_JAVA:
            raise StackError(
                f"{java} is Java {major}; Kafka 4.x needs Java {MIN_JAVA}+. "
                "Install it: apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME)"
            )
    return java


def pom_kafka_version() -> str:
    try:
        root = ET.parse(POM).getroot()
    except (OSError, ET.ParseError) as exc:
        raise StackError(f"cannot read {POM}: {exc}") from None
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = root.find("m:properties/m:kafka.version", ns)
    version = (node.text or "").strip() if node is not None else ""
    if not version:
        raise StackError(f"{POM} has no <properties><kafka.version>")
    return version


def _has_kafka_jars(libs: Path) -> bool:
    return any(libs.glob("kafka_2.*.jar")) and any(libs.glob("kafka-clients-*.jar"))


def kafka_classpath(cfg: Config) -> Path:
    """Directory whose *.jar files run a Kafka broker: $KAFKA_HOME/libs or the Maven cache."""
    if cfg.kafka_home:
        libs = Path(cfg.kafka_home).expanduser() / "libs"
        if libs.is_dir() and _has_kafka_jars(libs):
            return libs
        warn(f"KAFKA_HOME={cfg.kafka_home} is not a Kafka install (no libs/kafka_2.*.jar); using Maven")

    version = pom_kafka_version()
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    target = cfg.cache_dir / f"kafka-{version}"
    libs = target / "libs"
    stamp = target / "pom.sha256"

    def cached() -> bool:
        if not _has_kafka_jars(libs):
            return False
        # A cache made from another pom (other log4j/slf4j pins) is rebuilt;
        # a hand-made one without a stamp is trusted.
        return not stamp.exists() or stamp.read_text().strip() == pom_hash

    if cached():
        return libs
    with file_lock(cfg.cache_dir / ".lock", "the jar cache"):
        if cached():  # someone else resolved it while we waited
            return libs
        mvn = need_tool("mvn")
        say(f"kafka  : resolving Kafka {version} jars with Maven into {target} (once) ...")
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".kafka-{version}.", dir=cfg.cache_dir))
        try:
            cmd = [
                mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp / 'libs'}",
            ]  # fmt: skip
            try:
                res = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=1200, check=False,
                    cwd=tmp, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise StackError("Maven did not finish within 20 minutes") from None
            if res.returncode != 0 or not _has_kafka_jars(tmp / "libs"):
                out = (res.stdout + res.stderr).strip().splitlines()[-40:]
                raise StackError(
                    f"Maven could not resolve the Kafka jars (exit {res.returncode}):\n" + "\n".join(out)
                )
            (tmp / "pom.sha256").write_text(pom_hash + "\n")
            old = None
            if target.exists():  # stale (pom changed or broken): swap it out
                old = Path(tempfile.mkdtemp(prefix=f".old-kafka-{version}.", dir=cfg.cache_dir))
                os.replace(target, old / "x")
            os.replace(tmp, target)  # atomic on one filesystem
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        n = len(list(libs.glob("*.jar")))
        say(f"kafka  : {n} jars cached in {time.monotonic() - t0:.1f}s")
    return libs


# --------------------------------------------------------------------------- services


@dataclass
class Probe:
    state: str  # "ok" | "closed" | "bad"
    detail: str = ""


class Service:
    name = ""
    apt = ""
    group = ""  # what `--only` calls it
    port_var = ""  # the variable that moves it to another port

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    # to implement
    port: int

    def probe(self) -> Probe:
        raise NotImplementedError

    def address(self) -> str:
        raise NotImplementedError

    def is_ours(self, pid: int) -> bool:
        raise NotImplementedError

    def prepare(self) -> list[str]:
        raise NotImplementedError

    def start_timeout(self) -> float:
        return 60.0

    # common
    @property
    def pidfile(self) -> Path:
        return self.cfg.run_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.cfg.log_dir / f"{self.name}.log"

    @property
    def workdir(self) -> Path:
        return self.cfg.stack_dir

    def label(self) -> str:
        return f"{self.name:<6} :"

    def our_pid(self, fix: bool = True) -> int | None:
        """pid of the process `up` started: from the pid file, else found by its cmdline.

        With fix, a stale pid file is removed and a found process gets its pid file back.
        """
        pid = read_pid(self.pidfile)
        if pid is not None:
            if pid_alive(pid) and self.is_ours(pid):
                return pid
            if fix:
                remove_file(self.pidfile)
        for cand in all_pids():
            if pid_alive(cand) and self.is_ours(cand):
                if fix:
                    write_pid(self.pidfile, cand)
                return cand
        return None

    def spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        rotate_log(self.logfile)
        with self.logfile.open("ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # detached: own session, survives our exit / Ctrl-C
                close_fds=True,
            )
        write_pid(self.pidfile, proc.pid)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes] | None, pid: int, timeout: float) -> Probe:
        deadline = time.monotonic() + timeout
        last = Probe("closed", "not listening yet")
        while True:
            if proc is not None and proc.poll() is not None:
                return Probe("dead", f"process exited with code {proc.returncode}")
            if proc is None and not pid_alive(pid):
                return Probe("dead", "process is gone")
            last = self.probe()
            if last.state == "ok":
                return last
            if time.monotonic() >= deadline:
                return last
            time.sleep(0.2)


class Kafka(Service):
    name = "kafka"
    group = "kafka"
    port_var = "TRACEWATCH_KAFKA_PORT"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.port = cfg.kafka_port
        self.server_properties = cfg.conf_dir / "kafka-server.properties"
        self.log4j = cfg.conf_dir / "kafka-log4j2.properties"

    @property
    def workdir(self) -> Path:
        return self.cfg.stack_dir / "kafka"

    def address(self) -> str:
        return f"bootstrap {HOST}:{self.port}"

    def probe(self) -> Probe:
        try:
            info = kafka_probe(self.port)
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
                return Probe("closed", "connection refused")
            return Probe("bad", f"no Kafka answer ({exc.__class__.__name__}: {exc})")
        except ProtocolError as exc:
            return Probe("bad", str(exc))
        if info.metadata_version is not None and not info.brokers:
            return Probe("bad", "Metadata lists no broker yet")
        return Probe("ok", info.describe())

    def is_ours(self, pid: int) -> bool:
        args = pid_cmdline(pid)
        return "kafka.Kafka" in args and str(self.server_properties) in args

    def write_config(self) -> None:
        c = self.cfg
        c.conf_dir.mkdir(parents=True, exist_ok=True)
        c.kafka_data.mkdir(parents=True, exist_ok=True)
        props = f"""\
# Generated by deploy/local/stack.py -- edits are overwritten on every `up`.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{c.controller_port}
listeners=PLAINTEXT://{HOST}:{c.kafka_port},CONTROLLER://{HOST}:{c.controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{c.kafka_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={c.kafka_data}
num.partitions=4
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=4194304
replica.fetch.max.bytes=4194304
# small heap (-Xmx512m): the compaction dedupe buffer defaults to 128 MiB
log.cleaner.dedupe.buffer.size=33554432
"""
        log4j = """\
# Generated by deploy/local/stack.py. Broker log goes to stdout, which is the kafka.log file.
status = warn
name = tracewatch-kafka
appender.out.type = Console
appender.out.name = STDOUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# the full config dumps (hundreds of lines per start) and per-request chatter
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.channel.name = kafka.network.RequestChannel$
logger.channel.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
"""
        _write_if_changed(self.server_properties, props)
        _write_if_changed(self.log4j, log4j)

    def prepare(self) -> list[str]:
        java = find_java()
        libs = kafka_classpath(self.cfg)
        self.write_config()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cp = f"{libs}/*"
        logprop = f"-Dlog4j2.configurationFile={self.log4j}"
        if not (self.cfg.kafka_data / "meta.properties").exists():
            self._format(java, cp, logprop)
        return [
            java,
            "-Xms256m", "-Xmx512m",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            logprop,
            f"-Dkafka.logs.dir={self.cfg.log_dir}",
            "-cp", cp,
            "kafka.Kafka", str(self.server_properties),
        ]  # fmt: skip

    def _format(self, java: str, cp: str, logprop: str) -> None:
        tool = [java, "-Xmx256m", logprop, "-cp", cp, "kafka.tools.StorageTool"]
        say(f"{self.label()} formatting KRaft storage in {rel(self.cfg.kafka_data)}")
        res = _run([*tool, "random-uuid"])
        ids = [ln.strip() for ln in res.stdout.splitlines() if re.fullmatch(r"[A-Za-z0-9_-]{22}", ln.strip())]
        if res.returncode != 0 or not ids:
            raise StackError(f"StorageTool random-uuid failed:\n{res.stdout}{res.stderr}")
        res = _run([*tool, "format", "-t", ids[-1], "-c", str(self.server_properties)])
        if res.returncode != 0:
            raise StackError(f"StorageTool format failed (exit {res.returncode}):\n{res.stdout}{res.stderr}")


class Redis(Service):
    name = "redis"
    group = "redis"
    port_var = "TRACEWATCH_REDIS_PORT"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.port = cfg.redis_port
        self.conf = cfg.conf_dir / "redis.conf"

    @property
    def workdir(self) -> Path:
        return self.cfg.redis_data

    def address(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start_timeout(self) -> float:
        return 30.0

    def probe(self) -> Probe:
        try:
            return Probe("ok", redis_probe(self.port))
        except OSError as exc:
            if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
                return Probe("closed", "connection refused")
            return Probe("bad", f"no Redis answer ({exc.__class__.__name__}: {exc})")
        except ProtocolError as exc:
            return Probe("bad", str(exc))

    def is_ours(self, pid: int) -> bool:
        # redis-server rewrites its argv ("redis-server 127.0.0.1:6379"), so the config path
        # is gone; but it chdir()s into `dir`, which is our data directory.
        args = pid_cmdline(pid)
        return bool(args) and "redis-server" in args[0] and pid_cwd(pid) == str(self.workdir)

    def extra_conf(self) -> str:
        return ""

    def prepare(self) -> list[str]:
        exe = need_tool("redis-server")
        c = self.cfg
        c.conf_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = f"""\
# Generated by deploy/local/stack.py -- edits are overwritten on every `up`.
bind 127.0.0.1
port {self.port}
protected-mode yes
daemonize no
dir "{self.workdir}"
logfile "{self.logfile}"
loglevel notice
appendonly yes
appendfsync everysec
save ""
maxmemory-policy noeviction
""" + self.extra_conf()
        _write_if_changed(self.conf, conf)
        return [exe, str(self.conf)]


class RedisClusterNode(Redis):
    """One primary of the local Redis Cluster: its own port, directory, AOF and nodes.conf."""

    group = "redis-cluster"
    port_var = "TRACEWATCH_REDIS_CLUSTER_PORT"
    PREFIX = "redis-cluster-"

    def __init__(self, cfg: Config, port: int) -> None:
        super().__init__(cfg)
        self.port = port
        self.name = f"{self.PREFIX}{port}"
        self.conf = cfg.conf_dir / f"{self.name}.conf"

    @property
    def workdir(self) -> Path:
        return self.cfg.cluster_data / str(self.port)

    @property
    def nodes_conf(self) -> Path:
        return self.workdir / "nodes.conf"

    def address(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def extra_conf(self) -> str:
        return f"""\
cluster-enabled yes
cluster-config-file "{self.nodes_conf}"
cluster-node-timeout 5000
"""

    def cluster_info(self) -> dict[str, str]:
        return parse_info(redis_call(self.port, "CLUSTER", "INFO"))


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise StackError(f"timed out: {' '.join(cmd[:1] + cmd[-3:])}") from None


# --------------------------------------------------------------------------- commands


def services(cfg: Config, only: frozenset[str] = frozenset(GROUPS)) -> list[Service]:
    """What `up` runs: Kafka, Redis, and the cluster's nodes when TRACEWATCH_REDIS_CLUSTER is set."""
    out: list[Service] = []
    if "kafka" in only:
        out.append(Kafka(cfg))
    if "redis" in only:
        out.append(Redis(cfg))
    if "redis-cluster" in only:
        out += [RedisClusterNode(cfg, port) for port in cfg.cluster_ports]
    return out


def leftover_nodes(cfg: Config, have: list[Service]) -> list[Service]:
    """Cluster nodes with a pid file that the current config does not name (e.g. started with
    another TRACEWATCH_REDIS_CLUSTER): `down` stops them too."""
    names = {svc.name for svc in have}
    out: list[Service] = []
    for pidfile in sorted(cfg.run_dir.glob(f"{RedisClusterNode.PREFIX}*.pid")):
        port = pidfile.stem.removeprefix(RedisClusterNode.PREFIX)
        if port.isdigit() and pidfile.stem not in names:
            out.append(RedisClusterNode(cfg, int(port)))
    return out


def _cluster_formed(infos: list[dict[str, str]], n: int) -> bool:
    return all(
        info.get("cluster_state") == "ok"
        and info.get("cluster_slots_assigned") == str(CLUSTER_SLOTS)
        and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        and info.get("cluster_known_nodes") == str(n)
        and info.get("cluster_size") == str(n)
        for info in infos
    )


def _cluster_infos(nodes: list[RedisClusterNode]) -> list[dict[str, str]]:
    try:
        return [node.cluster_info() for node in nodes]
    except (OSError, ProtocolError) as exc:
        raise StackError(f"redis-cluster: CLUSTER INFO failed: {exc}") from None


def _cluster_summary(infos: list[dict[str, str]], nodes: list[RedisClusterNode]) -> str:
    return "; ".join(
        f"{node.port}: state={info.get('cluster_state')} slots={info.get('cluster_slots_assigned')} "
        f"known_nodes={info.get('cluster_known_nodes')}"
        for node, info in zip(nodes, infos, strict=True)
    )


def ensure_cluster(cfg: Config, nodes: list[RedisClusterNode], timeout: float = 30.0) -> str:
    """Create the cluster from fresh nodes once; then wait for cluster_state:ok on every node.

    Nodes that already know each other (a re-`up`, or a restart from their nodes.conf) are
    never re-created: only waited for.
    """
    n = len(nodes)
    infos = _cluster_infos(nodes)
    if _cluster_formed(infos, n):
        return f"already a cluster of {n} primaries, {CLUSTER_SLOTS} slots, cluster_state:ok"
    fresh = [info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0" for info in infos]
    if all(fresh):
        cli = need_tool("redis-cli")
        say(f"redis-cluster : creating a {n}-primary cluster on {HOST}:{nodes[0].port}..{nodes[-1].port}")
        res = _run([
            cli, "--cluster", "create", *(f"{HOST}:{node.port}" for node in nodes),
            "--cluster-replicas", "0", "--cluster-yes",
        ])  # fmt: skip
        if res.returncode != 0:
            out = (res.stdout + res.stderr).strip().splitlines()[-30:]
            raise StackError(f"redis-cli --cluster create failed (exit {res.returncode}):\n" + "\n".join(out))
        how = "created"
    elif any(fresh):
        raise StackError(
            "redis-cluster: some nodes belong to a cluster and some are empty "
            f"({_cluster_summary(infos, nodes)}). Start over with: "
            f"python3 {rel(HERE / 'stack.py')} down --only redis-cluster --purge"
        )
    else:
        how = "rejoined from nodes.conf"
    deadline = time.monotonic() + timeout
    while not _cluster_formed(infos, n):
        if time.monotonic() >= deadline:
            raise StackError(
                f"redis-cluster: not cluster_state:ok with {n} primaries and {CLUSTER_SLOTS} slots after "
                f"{timeout:.0f}s ({_cluster_summary(infos, nodes)}). If its nodes changed, start over with: "
                f"python3 {rel(HERE / 'stack.py')} down --only redis-cluster --purge"
            )
        time.sleep(0.2)
        infos = _cluster_infos(nodes)
    return f"{how}: {n} primaries, {CLUSTER_SLOTS} slots, cluster_state:ok"


def stop_pids(targets: list[tuple[Service, int]], timeout: float = 30.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL (the whole process group we created)."""
    for svc, pid in targets:
        say(f"{svc.label()} stopping pid {pid} (SIGTERM)")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = list(targets)
    while pending and time.monotonic() < deadline:
        time.sleep(0.2)
        pending = [(s, p) for s, p in pending if pid_alive(p)]
    for svc, pid in pending:
        say(f"{svc.label()} pid {pid} still alive after {timeout:.0f}s: SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        pending = [(s, p) for s, p in pending if pid_alive(p)]
    if pending:
        raise StackError(", ".join(f"{s.name}: pid {p} did not die" for s, p in pending))


def _only(cfg: Config, args: argparse.Namespace) -> frozenset[str]:
    only = frozenset(args.only or GROUPS)
    if args.only and "redis-cluster" in only and not cfg.redis_cluster and args.command != "down":
        raise StackError("--only redis-cluster: set TRACEWATCH_REDIS_CLUSTER (e.g. 3) to the number of primaries")
    return only


def cmd_up(cfg: Config, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    svcs = services(cfg, _only(cfg, args))
    for d in (cfg.stack_dir, cfg.run_dir, cfg.log_dir, cfg.conf_dir):
        d.mkdir(parents=True, exist_ok=True)
    nodes = [svc for svc in svcs if isinstance(svc, RedisClusterNode)]
    started: list[tuple[Service, subprocess.Popen[bytes]]] = []
    notes: dict[str, str] = {}
    with file_lock(cfg.stack_dir / ".lock", "the stack"):
        try:
            to_start: list[Service] = []
            for svc in svcs:
                pid = svc.our_pid()
                if pid is not None:
                    res = svc.wait_ready(None, pid, svc.start_timeout())
                    if res.state != "ok":
                        raise StackError(
                            f"{svc.name}: our process (pid {pid}) is alive but does not answer on "
                            f"port {svc.port}: {res.detail}\n--- last 40 lines of {svc.logfile}\n"
                            f"{tail(svc.logfile)}\n---\nTry: python3 {rel(HERE / 'stack.py')} down"
                        )
                    notes[svc.name] = f"already running (pid {pid}): {res.detail}"
                    continue
                res = svc.probe()
                if res.state == "bad":  # something listens: maybe a service still starting up
                    res = _wait_probe(svc, 5.0)
                if res.state == "ok":
                    notes[svc.name] = (
                        f"using the one already listening on {HOST}:{svc.port} "
                        f"(not started by stack.py; `down` leaves it alone): {res.detail}"
                    )
                    continue
                if res.state == "bad":
                    raise StackError(
                        f"{svc.name}: port {svc.port} is taken by something that is not a working "
                        f"{svc.name} ({res.detail}). Free it or set {svc.port_var}."
                    )
                to_start.append(svc)
            if any(svc.group == "kafka" for svc in to_start) and port_open(cfg.controller_port):
                raise StackError(
                    f"kafka: controller port {cfg.controller_port} is already in use. "
                    "Free it or set TRACEWATCH_KAFKA_CONTROLLER_PORT."
                )
            # Check every prerequisite before starting anything.
            cmds = {svc.name: svc.prepare() for svc in to_start}
            for svc in to_start:  # Kafka first: it is the slow one; Redis starts meanwhile
                started.append((svc, svc.spawn(cmds[svc.name])))
            for svc, proc in sorted(started, key=lambda sp: sp[0].group == "kafka"):
                res = svc.wait_ready(proc, proc.pid, svc.start_timeout())
                if res.state != "ok":
                    why = (
                        res.detail
                        if res.state == "dead"
                        else f"not ready after {svc.start_timeout():.0f}s: {res.detail}"
                    )
                    raise StackError(
                        f"{svc.name} did not come up on {HOST}:{svc.port} ({why})\n"
                        f"--- last 40 lines of {svc.logfile}\n{tail(svc.logfile)}\n---"
                    )
                notes[svc.name] = f"started (pid {proc.pid}): {res.detail}"
            if nodes:
                notes["redis-cluster"] = ensure_cluster(cfg, nodes)
        except BaseException:
            # leave nothing half-started behind
            for svc, proc in started:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                remove_file(svc.pidfile)
            raise
    for svc in svcs:
        say(f"{svc.label()} {svc.address():<28} {notes[svc.name]}")
        if read_pid(svc.pidfile) is not None:
            say(f"{'':8} log: {rel(svc.logfile)}")
    if nodes:
        say(f"redis-cluster : {cfg.cluster_seed:<28} {notes['redis-cluster']}")
    say(f"stack up in {time.monotonic() - t0:.1f}s (state in {rel(cfg.stack_dir)})")
    return 0


def _wait_probe(svc: Service, timeout: float) -> Probe:
    deadline = time.monotonic() + timeout
    while True:
        res = svc.probe()
        if res.state != "bad" or time.monotonic() >= deadline:
            return res
        time.sleep(0.3)


def cmd_down(cfg: Config, args: argparse.Namespace) -> int:
    only = _only(cfg, args)
    svcs = services(cfg, only)
    if "redis-cluster" in only:
        svcs += leftover_nodes(cfg, svcs)
    if not cfg.stack_dir.exists():
        for svc in svcs:
            say(f"{svc.label()} not running (no state in {rel(cfg.stack_dir)})")
        return 0
    with file_lock(cfg.stack_dir / ".lock", "the stack"):
        targets: list[tuple[Service, int]] = []
        for svc in svcs:
            pid = svc.our_pid(fix=False)
            if pid is not None:
                targets.append((svc, pid))
            elif svc.probe().state == "ok":
                say(f"{svc.label()} not started by stack.py; leaving the one on port {svc.port} alone")
            else:
                say(f"{svc.label()} not running")
        stop_pids(targets)
        for svc, pid in targets:
            say(f"{svc.label()} stopped (pid {pid})")
        for svc in svcs:
            remove_file(svc.pidfile)
        if args.purge:
            dirs = {"kafka": cfg.kafka_data, "redis": cfg.redis_data, "redis-cluster": cfg.cluster_data}
            for d in (dirs[g] for g in GROUPS if g in only):
                if d.exists():
                    shutil.rmtree(d)
                    say(f"purged {rel(d)}")
    return 0


def cmd_status(cfg: Config, args: argparse.Namespace) -> int:
    all_up = True
    svcs = services(cfg, _only(cfg, args))
    for svc in svcs:
        pid = svc.our_pid(fix=False) if cfg.stack_dir.exists() else None
        res = svc.probe()
        up = res.state == "ok"
        all_up &= up
        who = f"pid {pid}" if pid else ("external" if up else "-")
        detail = res.detail if up else (res.detail if res.state == "bad" else "")
        state = "up" if up else ("starting/unhealthy" if pid else "down")
        say(f"{svc.label()} {state:<5} {svc.address():<28} ({who}) {detail}".rstrip())
    nodes = [svc for svc in svcs if isinstance(svc, RedisClusterNode)]
    if nodes:
        try:
            infos = [node.cluster_info() for node in nodes]
        except (OSError, ProtocolError) as exc:
            ok, detail = False, f"CLUSTER INFO failed: {exc}"
        else:
            ok = _cluster_formed(infos, len(nodes))
            detail = f"{len(nodes)} primaries, cluster_state:ok" if ok else _cluster_summary(infos, nodes)
        all_up &= ok
        say(f"redis-cluster : {'up' if ok else 'down':<5} {cfg.cluster_seed:<28} {detail}")
    return 0 if all_up else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="Run a real single-node Kafka (KRaft) and Redis on 127.0.0.1, without Docker.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
environment (defaults):
  TRACEWATCH_KAFKA_PORT             9092
  TRACEWATCH_KAFKA_CONTROLLER_PORT  9093
  TRACEWATCH_REDIS_PORT             6379
  TRACEWATCH_REDIS_CLUSTER          0     (N >= 3: also run an N-primary Redis Cluster, no replicas)
  TRACEWATCH_REDIS_CLUSTER_PORT     7000  (cluster node i listens on this + i, its bus on that + 10000;
                                           seed URL redis+cluster://127.0.0.1:<port>)
  TRACEWATCH_STACK_DIR              <repo>/.stack   (config, data, logs, pid files)
  TRACEWATCH_CACHE_DIR              ~/.cache/tracewatch   (Kafka jars, resolved once by Maven)
  KAFKA_HOME                        use $KAFKA_HOME/libs/* instead of Maven, if it is a Kafka install
  JAVA_HOME                         java to use (else `java` on PATH; needs 17+)
""",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")
    p_up = sub.add_parser(
        "up",
        help="start Kafka and Redis (and the Redis Cluster if TRACEWATCH_REDIS_CLUSTER is set; "
        "idempotent) and wait until all answer",
    )
    p_down = sub.add_parser("down", help="stop what `up` started (idempotent)")
    p_down.add_argument("--purge", action="store_true", help="also delete the data (of the --only services)")
    p_status = sub.add_parser("status", help="show whether each service answers (exit 3 if one is down)")
    for p in (p_up, p_down, p_status):
        p.add_argument(
            "--only", action="append", choices=GROUPS, metavar="SERVICE",
            help=f"only this service, repeatable ({', '.join(GROUPS)}; default: all). "
            "redis-cluster needs TRACEWATCH_REDIS_CLUSTER, except for down",
        )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        cfg = Config.from_env()
        handler = {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command]
        return handler(cfg, args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
