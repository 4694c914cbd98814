#!/usr/bin/env python3
"""Berth side-by-side benchmark: berth-registry against CNCF Distribution 2.8
and v3 and zot, on the filesystem and s3 drivers, with nginx, MinIO and the
disk as ceilings. Run it through bench/run.sh (`make bench`), which provisions the
tools and passes their paths; see bench/README.md.

Every round measures every figure on every server, one figure at a time,
servers in an order that rotates each round (A B C, B C A, C A B, ...), so
that load from elsewhere on the machine spreads over all of them. Each
figure's result is the median over the rounds.
"""

import sys

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__

import argparse  # noqa: E402 - after the line above on purpose
import datetime
import hashlib
import hmac
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WRK_DIR = os.path.join(HERE, "wrk")

ACCEPT = (
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
)
MINIO_USER = "benchadmin"
MINIO_PASSWORD = "benchadmin-secret"
BUCKET = "bench"
REGION = "us-east-1"
MIB = 1 << 20

PULL_REPO = "bench/pull"
MIX_REPO = "bench/mix"

# Connections per figure (wrk threads in parentheses).
MANIFEST_CONNS, MANIFEST_THREADS = 32, 2
BLOB_CONNS, BLOB_THREADS = 4, 2
MIX_CONNS = 4  # one connection per wrk thread: the mixed script keeps per-thread state
PUSH_CLIENTS = (1, 4)
# Cold GETs through an emptied node cache per round, each paired with a direct MinIO GET.
COLD_GETS = 3
# The node cache's bound: far above the pull image, so nothing is evicted.
NODE_CACHE_BYTES = 4 << 30
# Piece size of fill_floor_ms's hashing and writes.
FILL_PIECE = 512 << 10

# figure key -> (label, unit, which way is better)
FIGURES = [
    ("manifest_tag_rps", "Manifest GET by tag, 32 conns", "req/s", "higher"),
    ("manifest_tag_p99", "Manifest GET by tag, p99", "ms", "lower"),
    ("manifest_digest_rps", "Manifest GET by digest, 32 conns", "req/s", "higher"),
    ("manifest_digest_p99", "Manifest GET by digest, p99", "ms", "lower"),
    ("blob_4m", "Blob GET 4 MiB, 4 conns", "MiB/s", "higher"),
    ("blob_64m", "Blob GET 64 MiB, 4 conns", "MiB/s", "higher"),
    ("push_skopeo_1", "Push, skopeo copy, 1 client", "MiB/s", "higher"),
    ("push_skopeo_4", "Push, skopeo copy, 4 clients", "MiB/s", "higher"),
    ("push_chunked_1", "Push, chunked PATCH, 1 client", "MiB/s", "higher"),
    ("push_chunked_4", "Push, chunked PATCH, 4 clients", "MiB/s", "higher"),
    ("mixed_rps", "Mixed 75% pull / 25% push, 4 conns", "req/s", "higher"),
    ("mixed_p99", "Mixed 75% pull / 25% push, p99", "ms", "lower"),
    ("peak_rss", "Peak RSS under the mixed load (VmHWM)", "MiB", "lower"),
    ("rss_anon_end", "RSS when the mixed load ends: anonymous (RssAnon)", "MiB", "lower"),
    ("rss_file_end", "RSS when the mixed load ends: file-backed (RssFile)", "MiB", "lower"),
    ("nodecache_warm_64m", "Blob GET 64 MiB, warm node cache, 4 conns", "MiB/s", "higher"),
    ("nodecache_cold_64m", "Blob GET 64 MiB, cold node cache, 1 client", "MiB/s", "higher"),
    ("nodecache_cold_cpu", "Cold node cache: the server's CPU per GET (the fill)", "ms", "lower"),
    ("nodecache_cold_others_cpu", "Cold node cache: MinIO's and curl's CPU per GET", "ms", "lower"),
]
FIGURE_INFO = {key: (label, unit, better) for key, label, unit, better in FIGURES}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url, headers=None, method="GET", timeout=5):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, dict(resp.headers), body
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, ConnectionError, OSError):
        return None, {}, b""


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Commands:
    """Every command the run executes, for the results file."""

    def __init__(self, path):
        self.path = path
        self.first = {}  # figure/what -> first exact command line

    def record(self, what, argv, env=None):
        line = " ".join(shlex.quote(a) for a in argv)
        if env:
            line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + line
        with open(self.path, "a") as f:
            f.write(f"[{what}] {line}\n")
        self.first.setdefault(what, line)
        return line


def children_cpu():
    """CPU seconds (user and system) of this process's waited-for children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def fill_floor_ms(path, scratch):
    """The least CPU a verified fill of the file at `path` costs this
    machine, in ms: hashing its bytes (sha256, hashlib's OpenSSL) while
    writing them to a new file at `scratch`, in FILL_PIECE pieces; the least
    of three tries, with no network and no server."""
    with open(path, "rb") as f:
        data = memoryview(f.read())
    best = None
    for _ in range(3):
        started = time.process_time()
        hasher = hashlib.sha256()
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for at in range(0, len(data), FILL_PIECE):
                piece = data[at:at + FILL_PIECE]
                hasher.update(piece)
                while piece:
                    piece = piece[os.write(fd, piece):]
        finally:
            os.close(fd)
        spent = time.process_time() - started
        os.unlink(scratch)
        best = spent if best is None else min(best, spent)
    return best * 1000


# --------------------------------------------------------------------------
# Processes under test


class Proc:
    """A long-running process that this run started and stops by its pid."""

    def __init__(self, name, argv, env, log_path, ready_url, cwd=None):
        self.name, self.argv, self.env, self.log_path, self.ready_url, self.cwd = name, argv, env, log_path, ready_url, cwd
        self.popen = None

    def start(self, timeout=60):
        logf = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True
        )
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            status, _, _ = http_status(self.ready_url, timeout=2)
            if status == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout}s; see {self.log_path}")

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def status_kib(self):
        """VmHWM, VmRSS, RssAnon, RssFile, ... from /proc/PID/status, in KiB."""
        values = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    values[key] = int(parts[0])
        return values

    def cpu_seconds(self):
        """User plus system CPU time the process has used, from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if not self.popen or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


RUNNING = []  # every Proc started, stopped at exit


def stop_all():
    for p in RUNNING:
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"stopping {p.name}: {e}", file=sys.stderr)


def clean_env(work):
    """The environment every server gets: nothing inherited. Distribution
    2.8's AWS SDK panics on AWS_CA_BUNDLE, which this machine sets; all
    servers get the same bare environment so none is treated differently."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": os.path.join(work, "tmp")}


class Registry:
    """One registry implementation on one driver: `fs`, `s3`, or `nodecache`
    (s3 behind Berth's node cache, `berth.nodecache`), configured by
    Distribution's config.yml (Berth reads the same file)."""

    config_name = "config.yml"

    def __init__(self, rid, label, argv_prefix, driver, bench):
        self.id, self.label, self.argv_prefix, self.driver, self.bench = rid, label, argv_prefix, driver, bench
        self.proc = None
        self.port = None
        self.pull_location = None  # storage holding the pull image
        self.starts = 0

    @property
    def key(self):
        return f"{self.id}-{self.driver}"

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    @property
    def cache_dir(self):
        """The node cache's directory (driver `nodecache`)."""
        return os.path.join(self.bench.work, "storage", f"{self.key}-cache")

    def config(self, location):
        """The same config.yml for every registry: the `registry:2` image's
        stock file, with the storage under test and blob redirects off."""
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  fields:",
            "    service: registry",
            "storage:",
            "  cache:",
            "    blobdescriptor: inmemory",
            "  delete:",
            "    enabled: true",
            "  redirect:",
            "    disable: true",
        ]
        if self.driver == "fs":
            lines += ["  filesystem:", f"    rootdirectory: {location}"]
        else:
            lines += [
                "  s3:",
                f"    bucket: {BUCKET}",
                f"    region: {REGION}",
                f"    regionendpoint: http://{self.bench.minio_addr}",
                "    forcepathstyle: true",
                f"    accesskey: {MINIO_USER}",
                f"    secretkey: {MINIO_PASSWORD}",
                f"    rootdirectory: {location}",
            ]
        lines += [
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
            "health:",
            "  storagedriver:",
            "    enabled: true",
            "    interval: 10s",
            "    threshold: 3",
        ]
        if self.driver == "nodecache":
            lines += ["berth:", "  nodecache:", f"    path: {self.cache_dir}", f"    maxbytes: {NODE_CACHE_BYTES}"]
        return "\n".join(lines) + "\n"

    def start(self, location):
        self.stop()
        self.port = free_port()
        self.starts += 1
        cfg = os.path.join(self.bench.work, "config", f"{self.key}-{self.starts}-{self.config_name}")
        text = self.config(location)
        with open(cfg, "w") as f:
            f.write(text)
        self.bench.configs.setdefault((self.config_name, self.driver), text)
        argv = self.argv_prefix + [cfg]
        env = clean_env(self.bench.work)
        self.bench.commands.record(f"server {self.key}", argv)
        self.proc = Proc(self.key, argv, env, os.path.join(self.bench.work, "logs", f"{self.key}.log"), f"http://{self.addr}/v2/")
        RUNNING.append(self.proc)
        self.proc.start()

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    def fresh_location(self, tag):
        if self.driver == "fs":
            path = os.path.join(self.bench.work, "storage", f"{self.key}-{tag}")
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            return path
        return f"/{self.key}-{tag}"

    def drop_location(self, location):
        if self.driver == "fs":
            shutil.rmtree(location, ignore_errors=True)
        # s3: left in the bucket; MinIO's directory is removed at the end of the run.


class Zot(Registry):
    """zot, with its own config file (JSON): no garbage collection, no
    deduplication (Distribution and Berth store each blob once by digest
    anyway; zot's dedupe adds hard links and a cache database), the storage
    under test. Its log level is error, as zot's own benchmark config has it:
    zot then writes no access log, while the others write one line per
    request. That favours zot: at info, where zot logs every request with
    its headers as JSON, it served manifest GETs by tag about 1.35x slower
    (1.1x to 1.9x over 7 interleaved runs). On s3, zot uses
    Distribution v3's s3 driver with the same parameters, and keeps a local
    directory for its BoltDB cache."""

    config_name = "config.json"

    def config(self, location):
        storage = {"rootDirectory": location, "gc": False, "dedupe": False}
        if self.driver == "s3":
            storage["rootDirectory"] = self.fresh_local_dir(location)
            storage["storageDriver"] = {
                "name": "s3",
                "region": REGION,
                "regionendpoint": f"http://{self.bench.minio_addr}",
                "bucket": BUCKET,
                "forcepathstyle": True,
                "secure": False,
                "accesskey": MINIO_USER,
                "secretkey": MINIO_PASSWORD,
                "rootdirectory": location,
            }
        return json.dumps({
            "distSpecVersion": "1.1.1",
            "storage": storage,
            "http": {"address": "127.0.0.1", "port": str(self.port)},
            "log": {"level": "error"},
        }, indent=2) + "\n"

    def fresh_local_dir(self, location):
        path = self.local_dir(location)
        os.makedirs(path, exist_ok=True)
        return path

    def local_dir(self, location):
        """zot's local directory beside an s3 location (its cache database)."""
        return os.path.join(self.bench.work, "storage", f"{self.key}-local{location.replace('/', '-')}")

    def drop_location(self, location):
        super().drop_location(location)
        if self.driver == "s3":
            shutil.rmtree(self.local_dir(location), ignore_errors=True)


# --------------------------------------------------------------------------
# Clients


def parse_wrk(output):
    for line in output.splitlines():
        if line.startswith("BENCH-JSON "):
            return json.loads(line[len("BENCH-JSON "):])
    return None


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        os.makedirs(self.work, exist_ok=True)
        # nginx's workers run as nobody: they must be able to reach the served files.
        os.chmod(self.work, 0o755)
        for d in ("logs", "config", "storage", "tmp", "wrk"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        self.commands = Commands(os.path.join(self.work, "commands.log"))
        self.duration = args.duration
        self.images = None
        self.minio = None
        self.minio_addr = None
        self.nginx = None
        self.nginx_addr = None
        self.results = {}  # driver -> figure -> server key -> [per round]
        self.notes = []
        self.wrk_runs = 0
        self.regs = {}
        self.dd_cache = {}  # round -> disk MiB/s
        self.fill_floor = [None] * args.rounds  # per round: ms, from fill_floor_ms
        self.configs = {}  # (config file name, driver) -> the first such config written
        self.started = self.finished = datetime.datetime.now()
        self.load_start = ""

    # ---- bookkeeping

    def put(self, driver, figure, who, rnd, value):
        per_round = self.results.setdefault(driver, {}).setdefault(figure, {}).setdefault(who, [None] * self.args.rounds)
        per_round[rnd] = value

    def note(self, text):
        log("NOTE " + text)
        self.notes.append(text)

    # ---- wrk

    def wrk(self, what, url, conns, threads, script, headers=(), script_args=(), timeout="30s"):
        argv = [self.args.wrk, f"-t{threads}", f"-c{conns}", f"-d{self.duration}s", "--latency", f"--timeout={timeout}",
                "-s", script]
        for h in headers:
            argv += ["-H", h]
        argv.append(url)
        if script_args:
            argv += ["--"] + list(script_args)
        self.commands.record(what, argv)
        self.wrk_runs += 1
        out = subprocess.run(argv, capture_output=True, text=True)
        with open(os.path.join(self.work, "wrk", f"{self.wrk_runs:04d}.txt"), "w") as f:
            f.write(f"# {what}\n# {' '.join(shlex.quote(a) for a in argv)}\n{out.stdout}\n{out.stderr}")
        result = parse_wrk(out.stdout)
        if out.returncode != 0 or result is None:
            self.note(f"{what}: wrk failed ({out.returncode}): {out.stderr.strip()[:200]}")
            return None
        e = result["errors"]
        bad = e["connect"] + e["read"] + e["write"] + e["status"] + e["timeout"]
        if bad:
            self.note(f"{what}: {bad} errors in {result['requests']} requests {e}")
            if e["status"] > result["requests"] * 0.01 or result["requests"] == 0:
                return None
        secs = result["duration_us"] / 1e6
        result["rps"] = result["requests"] / secs
        result["mibps"] = result["bytes"] / secs / MIB
        result["p99_ms"] = result["latency_us"]["p99"] / 1000.0
        return result

    # ---- setup

    def generate_images(self):
        out = os.path.join(self.work, "images")
        argv = [sys.executable, os.path.join(HERE, "gen_images.py"), out]
        self.commands.record("generate images", argv)
        log("generating images")
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "images.json")) as f:
            self.images = json.load(f)

    def start_minio(self):
        data = os.path.join(self.work, "minio")
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(os.path.join(data, BUCKET))
        port, console = free_port(), free_port()
        self.minio_addr = f"127.0.0.1:{port}"
        env = clean_env(self.work)
        env.update({"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD})
        argv = [self.args.minio, "server", "--quiet", "--address", self.minio_addr, "--console-address", f"127.0.0.1:{console}", data]
        self.commands.record("server minio", argv, {"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": "..."})
        self.minio = Proc("minio", argv, env, os.path.join(self.work, "logs", "minio.log"), f"http://{self.minio_addr}/minio/health/ready")
        RUNNING.append(self.minio)
        self.minio.start(timeout=120)

    def start_nginx(self, root=None, ready="manifest.json"):
        """nginx serving `root`, by default the ceilings' files (checked to be
        the registries' bytes); `ready` is a path it serves once up."""
        prefix = os.path.join(self.work, "nginx")
        os.makedirs(prefix, exist_ok=True)
        port = free_port()
        self.nginx_addr = f"127.0.0.1:{port}"
        conf = os.path.join(prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    types {{ application/vnd.oci.image.manifest.v1+json json; }}
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {self.nginx_addr};
        root {root or self.images['www']};
    }}
}}
""")
        argv = [self.args.nginx, "-p", prefix, "-c", conf]
        self.commands.record("server nginx", argv)
        self.nginx = Proc("nginx", argv, clean_env(self.work), os.path.join(self.work, "logs", "nginx.log"), f"http://{self.nginx_addr}/{ready}")
        RUNNING.append(self.nginx)
        self.nginx.start()
        if root is None:
            self.check_ceiling(lambda name: f"http://{self.nginx_addr}/{name}", "nginx")

    def check_ceiling(self, url_of, who):
        """Fails unless the ceiling serves the same bytes as the registries."""
        files = {"manifest.json": self.images["manifest_file"]}
        files.update({f"blob-{label}": blob["file"] for label, blob in self.images["blobs"].items()})
        for name, path in files.items():
            status, _, body = http_status(url_of(name), timeout=60)
            if status != 200 or len(body) != os.path.getsize(path):
                raise RuntimeError(f"{who}: GET {name} answered {status} with {len(body)} bytes")

    def skopeo_argv(self, layout, addr, repo):
        copy = [self.args.skopeo, "copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false",
                f"oci:{layout}:latest", f"docker://{addr}/{repo}:latest"]
        if self.args.private_blob_cache:
            # skopeo keeps a blob-location cache (root: /var/lib/containers/cache) that would
            # turn later pushes into cross-repository mounts; give each copy an empty one.
            return ["unshare", "-m", "sh", "-c",
                    'mount -t tmpfs tmpfs /var/lib/containers/cache && exec "$0" "$@"'] + copy
        return copy

    def seed(self, reg):
        """Pushes the pull image into a fresh storage of `reg` and checks it is served."""
        reg.pull_location = reg.fresh_location("pull")
        reg.start(reg.pull_location)
        argv = self.skopeo_argv(self.images["pull"]["layout"], reg.addr, PULL_REPO)
        self.commands.record(f"seed {reg.key}", argv)
        subprocess.run(argv, check=True)
        self.check_pull(reg)

    def check_pull(self, reg):
        base = f"http://{reg.addr}/v2/{PULL_REPO}"
        m = self.images["pull"]["manifest"]
        for ref in ("latest", m["digest"]):
            status, headers, body = http_status(f"{base}/manifests/{ref}", {"Accept": ACCEPT})
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if status != 200 or digest != m["digest"]:
                raise RuntimeError(f"{reg.key}: GET manifests/{ref} answered {status} with {digest}")
        for label, blob in self.images["blobs"].items():
            status, _, body = http_status(f"{base}/blobs/{blob['digest']}", timeout=60)
            if status != 200 or len(body) != blob["size"]:
                raise RuntimeError(f"{reg.key}: GET blob {label} answered {status}, {len(body)} bytes")

    # ---- S3 helpers (MinIO direct, the s3 ceiling)

    def presign(self, key, expires=86400):
        host = self.minio_addr
        path = f"/{BUCKET}/{key}"
        now = datetime.datetime.now(datetime.timezone.utc)
        amzdate, datestamp = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        scope = f"{datestamp}/{REGION}/s3/aws4_request"
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{MINIO_USER}/{scope}",
            "X-Amz-Date": amzdate,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        q = "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in sorted(query.items()))
        canonical = "\n".join(["GET", urllib.parse.quote(path, safe="/~"), q, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + MINIO_PASSWORD).encode()
        for part in (datestamp, REGION, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"http://{host}{path}?{q}&X-Amz-Signature={sig}"

    def curl_put_argv(self, pairs):
        """One curl process PUTting each (file, key) in turn on one connection."""
        argv = [self.args.curl, "-sS", "-f", "-o", "/dev/null", "--aws-sigv4", f"aws:amz:{REGION}:s3",
                "--user", f"{MINIO_USER}:{MINIO_PASSWORD}"]
        for path, key in pairs:
            argv += ["-T", path, f"http://{self.minio_addr}/{BUCKET}/{key}"]
        return argv

    def image_files(self, image):
        blobs = os.path.join(image["layout"], "blobs", "sha256")
        descs = [image["config"]] + image["layers"] + [image["manifest"]]
        return [(os.path.join(blobs, d["digest"].split(":", 1)[1]), d["digest"].split(":", 1)[1]) for d in descs]

    # ---- the run

    def registries(self, driver):
        if driver == "nodecache":
            # Berth on s3 behind its node cache, and Berth on the filesystem
            # driver as the peer (the same blobs on local disk).
            return [
                Registry("berth", "Berth, node cache", [self.args.berth, "serve", "--config"], driver, self),
                Registry("berthfs", "Berth, filesystem", [self.args.berth, "serve", "--config"], "fs", self),
            ]
        regs = [
            Registry("berth", "Berth", [self.args.berth, "serve", "--config"], driver, self),
            Registry("dist28", "Distribution 2.8", [self.args.dist28, "serve"], driver, self),
        ]
        if self.args.dist3:
            regs.append(Registry("dist3", "Distribution v3", [self.args.dist3, "serve"], driver, self))
        if self.args.zot:
            regs.append(Zot("zot", "zot", [self.args.zot, "serve"], driver, self))
        return regs

    def run(self):
        self.started = datetime.datetime.now()
        with open("/proc/loadavg") as f:
            self.load_start = " ".join(f.read().split()[:3])
        self.generate_images()
        self.start_nginx()
        drivers = [d for d in self.args.drivers.split(",") if d]
        if "s3" in drivers or "nodecache" in drivers:
            self.start_minio()
            self.seed_minio_objects()
        self.regs.update({d: self.registries(d) for d in drivers})
        for d in drivers:
            for reg in self.regs[d]:
                log(f"seeding {reg.key}")
                self.seed(reg)
        self.first_commands = {}
        for rnd in range(self.args.rounds):
            log(f"round {rnd + 1}/{self.args.rounds}")
            for d in drivers:
                self.round(d, rnd)
        for d in drivers:
            for reg in self.regs[d]:
                reg.stop()
        self.finished = datetime.datetime.now()

    def rotate(self, items, rnd):
        k = rnd % len(items)
        return items[k:] + items[:k]

    def round(self, driver, rnd):
        if driver == "nodecache":
            self.node_cache_round(rnd)
            return
        regs = self.rotate(self.regs[driver], rnd)
        pull = self.images["pull"]
        blobs = self.images["blobs"]
        # The ceiling joins the rotation as one more server.
        ceiling = "nginx" if driver == "fs" else "minio"

        def ceiling_url(what):
            if driver == "fs":
                return f"http://{self.nginx_addr}/{what}"
            return self.presign({"manifest.json": "ceiling/manifest.json"}.get(what, f"ceiling/{what}"))

        targets = [("manifest", "tag", "latest"), ("manifest", "digest", pull["manifest"]["digest"])]
        for _, kind, ref in targets:
            for who in self.rotate([r.key for r in regs] + [ceiling], rnd):
                if who == ceiling:
                    url, hdrs = ceiling_url("manifest.json"), []
                else:
                    reg = next(r for r in regs if r.key == who)
                    url, hdrs = f"http://{reg.addr}/v2/{PULL_REPO}/manifests/{ref}", [f"Accept: {ACCEPT}"]
                r = self.wrk(f"manifest_{kind} {who}", url, MANIFEST_CONNS, MANIFEST_THREADS,
                             os.path.join(WRK_DIR, "report.lua"), hdrs)
                who_key = "ceiling" if who == ceiling else who
                self.put(driver, f"manifest_{kind}_rps", who_key, rnd, r and r["rps"])
                self.put(driver, f"manifest_{kind}_p99", who_key, rnd, r and r["p99_ms"])
                log(f"  {driver} manifest_{kind} {who}: {fmt(r and r['rps'])} req/s p99 {fmt(r and r['p99_ms'])} ms")

        for label, fig in (("4MiB", "blob_4m"), ("64MiB", "blob_64m")):
            blob = blobs[label]
            for who in self.rotate([r.key for r in regs] + [ceiling], rnd):
                if who == ceiling:
                    url = ceiling_url(f"blob-{label}")
                else:
                    reg = next(r for r in regs if r.key == who)
                    url = f"http://{reg.addr}/v2/{PULL_REPO}/blobs/{blob['digest']}"
                r = self.wrk(f"{fig} {who}", url, BLOB_CONNS, BLOB_THREADS, os.path.join(WRK_DIR, "report.lua"), timeout="60s")
                self.put(driver, fig, "ceiling" if who == ceiling else who, rnd, r and r["mibps"])
                log(f"  {driver} {fig} {who}: {fmt(r and r['mibps'])} MiB/s")

        # Mixed load, each server restarted first so that VmHWM is this load's peak.
        mix = self.images["mix_blob"]
        for reg in regs:
            reg.start(reg.pull_location)
            args = [PULL_REPO, "latest", pull["manifest"]["digest"], blobs["4MiB"]["digest"], MIX_REPO, mix["path"], mix["digest"]]
            r = self.wrk(f"mixed {reg.key}", f"http://{reg.addr}/", MIX_CONNS, MIX_CONNS,
                         os.path.join(WRK_DIR, "mixed.lua"), script_args=args, timeout="60s")
            st = reg.proc.status_kib()
            hwm = st.get("VmHWM")
            self.put(driver, "mixed_rps", reg.key, rnd, r and r["rps"])
            self.put(driver, "mixed_p99", reg.key, rnd, r and r["p99_ms"])
            self.put(driver, "peak_rss", reg.key, rnd, hwm / 1024.0 if hwm else None)
            for fig, key in (("rss_anon_end", "RssAnon"), ("rss_file_end", "RssFile")):
                self.put(driver, fig, reg.key, rnd, st[key] / 1024.0 if key in st else None)
            log(f"  {driver} mixed {reg.key}: {fmt(r and r['rps'])} req/s p99 {fmt(r and r['p99_ms'])} ms, VmHWM {fmt(hwm and hwm / 1024)} MiB")

        # Pushes, each into a fresh storage and a freshly started server.
        for tool in ("skopeo", "chunked"):
            for clients in PUSH_CLIENTS:
                fig = f"push_{tool}_{clients}"
                for reg in regs:
                    self.put(driver, fig, reg.key, rnd, self.push(reg, tool, clients, f"r{rnd}-{fig}"))
                self.put(driver, fig, "ceiling", rnd, self.push_ceiling(driver, clients, rnd))
        # Leave the pull servers running for the next round.
        for reg in regs:
            reg.start(reg.pull_location)

    def node_cache_round(self, rnd):
        """Warm: wrk on the 64 MiB blob through the node cache and from the
        filesystem driver. Cold: one GET of it through an emptied node cache
        (a fill from MinIO, streamed while written) and one direct MinIO GET
        of the same bytes, alternating, COLD_GETS times."""
        regs = self.rotate(self.regs["nodecache"], rnd)
        cached = next(r for r in regs if r.driver == "nodecache")
        blob = self.images["blobs"]["64MiB"]
        path = f"/v2/{PULL_REPO}/blobs/{blob['digest']}"
        for reg in regs:
            url = f"http://{reg.addr}{path}"
            http_status(url, timeout=120)  # fills the node cache, if it is empty
            r = self.wrk(f"nodecache_warm_64m {reg.key}", url, BLOB_CONNS, BLOB_THREADS,
                         os.path.join(WRK_DIR, "report.lua"), timeout="60s")
            self.put("nodecache", "nodecache_warm_64m", reg.key, rnd, r and r["mibps"])
            log(f"  nodecache_warm_64m {reg.key}: {fmt(r and r['mibps'])} MiB/s")
        cold, direct = [], []
        # CPU seconds per kind of GET, to show what bounds the cold figure:
        # Berth's for its fills, MinIO's and curl's for both kinds.
        spent = {"fill": 0.0, "fill_others": 0.0, "direct_others": 0.0}

        def others():
            return self.minio.cpu_seconds() + children_cpu()

        for _ in range(COLD_GETS):
            cached.stop()
            shutil.rmtree(cached.cache_dir, ignore_errors=True)
            cached.start(cached.pull_location)
            berth0, others0 = cached.proc.cpu_seconds(), others()
            cold.append(self.timed_get(f"nodecache_cold_64m {cached.key}", f"http://{cached.addr}{path}", blob["size"]))
            spent["fill"] += cached.proc.cpu_seconds() - berth0
            spent["fill_others"] += others() - others0
            others0 = others()
            direct.append(self.timed_get("nodecache_cold_64m minio", self.presign("ceiling/blob-64MiB"), blob["size"]))
            spent["direct_others"] += others() - others0
        self.put("nodecache", "nodecache_cold_64m", cached.key, rnd, median(cold))
        self.put("nodecache", "nodecache_cold_64m", "ceiling", rnd, median(direct))
        self.put("nodecache", "nodecache_cold_cpu", cached.key, rnd, spent["fill"] * 1000 / COLD_GETS)
        self.put("nodecache", "nodecache_cold_others_cpu", cached.key, rnd, spent["fill_others"] * 1000 / COLD_GETS)
        self.put("nodecache", "nodecache_cold_others_cpu", "ceiling", rnd, spent["direct_others"] * 1000 / COLD_GETS)
        self.fill_floor[rnd] = fill_floor_ms(blob["file"], os.path.join(self.work, "tmp", "fill-floor"))
        log(f"  nodecache_cold_64m: a verified fill's least CPU on this machine {fmt(self.fill_floor[rnd])} ms")

    def timed_get(self, what, url, size):
        """MiB/s of one curl GET of `url`, which must answer `size` bytes."""
        argv = [self.args.curl, "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]
        self.commands.record(what, argv)
        out = subprocess.run(argv, capture_output=True, text=True)
        parts = out.stdout.split()
        if out.returncode != 0 or len(parts) != 2 or int(parts[0]) != size or float(parts[1]) <= 0:
            self.note(f"{what}: curl failed ({out.returncode}, {out.stdout.strip()}): {out.stderr.strip()[:200]}")
            return None
        mibps = size / float(parts[1]) / MIB
        log(f"  {what}: {fmt(mibps)} MiB/s")
        return mibps

    def push(self, reg, tool, clients, tag, on_start=None, on_end=None):
        location = reg.fresh_location(tag)
        reg.start(location)
        if on_start:
            on_start()
        images = self.images["push"][:clients]
        procs = []
        # Write back what earlier figures left dirty, so that no server's
        # push waits on another's writeback.
        os.sync()
        started = time.monotonic()
        for i, image in enumerate(images):
            repo = f"bench/push-{i}"
            if tool == "skopeo":
                argv = self.skopeo_argv(image["layout"], reg.addr, repo)
            else:
                argv = [sys.executable, os.path.join(HERE, "push_chunked.py"), reg.addr, image["layout"], repo,
                        "--chunk-size", str(self.args.chunk_size)]
            self.commands.record(f"push_{tool}_{clients} {reg.key}", argv)
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        failed = []
        for p in procs:
            out, err = p.communicate()
            if p.returncode != 0:
                failed.append(err.strip()[-300:])
        elapsed = time.monotonic() - started
        if on_end:
            on_end()
        reg.stop()
        reg.drop_location(location)
        total = sum(img["bytes"] for img in images)
        if failed:
            self.note(f"push_{tool}_{clients} {reg.key}: client failed: {failed[0]}")
            return None
        mibps = total / elapsed / MIB
        log(f"  {reg.driver} push_{tool}_{clients} {reg.key}: {fmt(mibps)} MiB/s ({total / MIB:.0f} MiB in {elapsed:.2f}s)")
        return mibps

    def push_ceiling(self, driver, clients, rnd):
        if driver == "fs":
            # The disk: sequential write made durable (dd conv=fsync), once per round.
            if rnd not in self.dd_cache:
                path = os.path.join(self.work, "storage", "dd.tmp")
                argv = ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={self.args.dd_mib}", "conv=fsync"]
                self.commands.record("ceiling disk", argv)
                started = time.monotonic()
                subprocess.run(argv, check=True, capture_output=True)
                elapsed = time.monotonic() - started
                os.unlink(path)
                self.dd_cache[rnd] = self.args.dd_mib / elapsed
                log(f"  fs disk dd conv=fsync: {fmt(self.dd_cache[rnd])} MiB/s")
            return self.dd_cache[rnd]
        # MinIO direct: the same bytes as the push, PUT by curl, one process per client.
        images = self.images["push"][:clients]
        procs = []
        started = time.monotonic()
        for i, image in enumerate(images):
            pairs = [(path, f"ceiling-put/r{rnd}-c{clients}/{i}/{name}") for path, name in self.image_files(image)]
            argv = self.curl_put_argv(pairs)
            self.commands.record(f"ceiling s3 put {clients}", argv)
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        errs = [p.communicate()[1] for p in procs]
        elapsed = time.monotonic() - started
        if any(p.returncode != 0 for p in procs):
            self.note(f"MinIO PUT ceiling failed: {[e.strip()[-200:] for e in errs if e.strip()][:1]}")
            return None
        mibps = sum(img["bytes"] for img in images) / elapsed / MIB
        log(f"  s3 MinIO PUT {clients} client(s): {fmt(mibps)} MiB/s")
        return mibps

    def seed_minio_objects(self):
        """Objects the s3 GET ceiling reads: the same manifest and blobs."""
        pairs = [(self.images["manifest_file"], "ceiling/manifest.json")]
        for label, blob in self.images["blobs"].items():
            pairs.append((blob["file"], f"ceiling/blob-{label}"))
        argv = self.curl_put_argv(pairs)
        self.commands.record("seed minio", argv)
        subprocess.run(argv, check=True)
        self.check_ceiling(lambda name: self.presign(f"ceiling/{name}"), "MinIO")


PROFILE_FIGURES = ("manifest_tag", "manifest_digest", "blob_4m", "blob_64m", "mixed",
                   "push_skopeo_1", "push_skopeo_4", "push_chunked_1", "push_chunked_4")


def profile(bench, figure):
    """Runs one figure's load on Berth alone, under `perf record`, and writes
    perf reports next to the logs: what bounds Berth on that load."""
    a = bench.args
    driver = a.drivers.split(",")[0]
    bench.generate_images()
    if driver == "s3":
        bench.start_minio()
    reg = Registry("berth", "Berth", [a.berth, "serve", "--config"], driver, bench)
    bench.regs = {driver: [reg]}
    bench.seed(reg)
    reg.start(reg.pull_location)  # a fresh process, as for the measured runs
    out = os.path.join(bench.work, f"perf-{driver}-{figure}")
    perf = {}

    def attach():
        argv = [a.perf, "record", "-F", str(a.perf_freq), "--call-graph", "dwarf,8192", "-p", str(reg.proc.pid),
                "-o", out + ".data"]
        bench.commands.record(f"profile {figure}", argv)
        perf["p"] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(out + ".record.log", "w"))
        time.sleep(0.5)

    pull, blobs, mix = bench.images["pull"], bench.images["blobs"], bench.images["mix_blob"]
    base = lambda: f"http://{reg.addr}/v2/{PULL_REPO}"  # noqa: E731 - the port changes on restart
    report = os.path.join(WRK_DIR, "report.lua")
    status = {}
    # Who spends the machine's CPU during the load: Berth, or its clients
    # (wrk, skopeo, curl), or neither (waiting on the disk or the network).
    before = {}

    def cpu_start():
        before.update(wall=time.monotonic(), server=reg.proc.cpu_seconds(), clients=children_cpu())

    def cpu_split():
        log(f"{figure}: over {time.monotonic() - before['wall']:.2f} s of wall time on {os.cpu_count()} cores, "
            f"Berth used {reg.proc.cpu_seconds() - before['server']:.2f} s of CPU "
            f"and its clients {children_cpu() - before['clients']:.2f} s")

    if figure.startswith("push_"):
        _, tool, clients = figure.split("_")
        r = bench.push(reg, tool, int(clients), "profile", on_start=lambda: (attach(), cpu_start()), on_end=cpu_split)
        log(f"{figure}: {fmt(r)} MiB/s")
    else:
        attach()
        cpu_start()
        if figure.startswith("manifest_"):
            ref = "latest" if figure == "manifest_tag" else pull["manifest"]["digest"]
            r = bench.wrk(figure, f"{base()}/manifests/{ref}", MANIFEST_CONNS, MANIFEST_THREADS, report, [f"Accept: {ACCEPT}"])
            log(f"{figure}: {fmt(r and r['rps'])} req/s, p99 {fmt(r and r['p99_ms'])} ms")
        elif figure.startswith("blob_"):
            blob = blobs["4MiB" if figure == "blob_4m" else "64MiB"]
            r = bench.wrk(figure, f"{base()}/blobs/{blob['digest']}", BLOB_CONNS, BLOB_THREADS, report, timeout="60s")
            log(f"{figure}: {fmt(r and r['mibps'])} MiB/s")
        else:
            args = [PULL_REPO, "latest", pull["manifest"]["digest"], blobs["4MiB"]["digest"], MIX_REPO, mix["path"], mix["digest"]]
            r = bench.wrk(figure, f"http://{reg.addr}/", MIX_CONNS, MIX_CONNS, os.path.join(WRK_DIR, "mixed.lua"),
                          script_args=args, timeout="60s")
            log(f"{figure}: {fmt(r and r['rps'])} req/s, p99 {fmt(r and r['p99_ms'])} ms")
        cpu_split()
        status = reg.proc.status_kib()
        reg.stop()
    p = perf["p"]
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    p.wait()
    if status:
        log("berth-registry at the end of the load: " + ", ".join(
            f"{k} {status[k] / 1024:.1f} MiB" for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile") if k in status))
    reports = {
        "self": ["--no-children", "--sort", "sym", "-g", "none", "--percent-limit", "0.5"],
        "children": ["--children", "--sort", "sym", "-g", "none", "--percent-limit", "2"],
        "dso": ["--no-children", "--sort", "dso", "-g", "none"],
    }
    for name, opts in reports.items():
        text = subprocess.run([a.perf, "report", "-i", out + ".data", "--stdio"] + opts,
                              capture_output=True, text=True).stdout
        lines = [l for l in text.splitlines() if l.strip() and not l.startswith("#")]
        with open(f"{out}.{name}.txt", "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"\n== perf report ({name}), {out}.{name}.txt")
        print("\n".join(lines[:30 if name != "dso" else 8]))


def fmt(v, digits=None):
    if v is None:
        return "n/a"
    if digits is not None:
        return f"{v:.{digits}f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="scratch directory (logs, storage, images)")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--drivers", default="fs,s3,nodecache")
    p.add_argument("--chunk-size", type=int, default=5 * MIB)
    p.add_argument("--dd-mib", type=int, default=256)
    p.add_argument("--berth", required=True)
    p.add_argument("--dist28", required=True)
    p.add_argument("--dist3", default="")
    p.add_argument("--minio", default="")
    p.add_argument("--nginx", default="/usr/sbin/nginx")
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--skopeo", default="skopeo")
    p.add_argument("--curl", default="curl")
    p.add_argument("--zot", default="", help="zot's binary; empty: zot is not in the run")
    p.add_argument("--zot-version", default="", help="which zot --zot is, for the results")
    p.add_argument("--zot-missing", default="", help="why zot is not in the run, for the results")
    p.add_argument("--no-private-blob-cache", dest="private_blob_cache", action="store_false")
    p.add_argument("--command-line", default="", help="the command that started the run, for the results")
    p.add_argument("--profile", choices=PROFILE_FIGURES,
                   help="instead of the comparison: run this figure's load on Berth alone under perf record "
                        "(first driver of --drivers) and print where the time goes")
    p.add_argument("--perf", default="perf")
    p.add_argument("--perf-freq", type=int, default=499)
    args = p.parse_args()

    bench = Bench(args)
    if args.profile:
        args.rounds = 1
        try:
            profile(bench, args.profile)
        finally:
            stop_all()
        return 0
    failed = None
    try:
        bench.run()
    except Exception as e:  # noqa: BLE001 - still report what was measured
        failed = e
        bench.note(f"the run stopped early: {type(e).__name__}: {e}")
        bench.finished = datetime.datetime.now()
    finally:
        stop_all()
    if not getattr(bench, "regs", None):
        raise failed
    import report  # noqa: E402 - sibling module

    with open(os.path.join(bench.work, "results.json"), "w") as f:
        json.dump({"results": bench.results, "notes": bench.notes}, f, indent=1)
    path = report.write(bench)
    log(f"results written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
