#!/usr/bin/env python3
"""Pull-through, side by side in one run (bench/README.md): Berth
(`proxy.remoteurl`) against CNCF Distribution 2.8 and v3 in proxy mode, all
in front of the same upstream registry, each on fresh filesystem storage: a
cold pull (1 and 4 clients pulling the same image at once), then warm pulls
and manifest GETs by tag, and the peak RSS; with the upstream's count of blob
GETs during the 4-client cold pull.

Rounds interleave the servers in a rotating order, as bench.py does; each
figure is the median over the rounds, and ratios are taken within a round.
"""

import sys

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__

import argparse  # noqa: E402 - after the line above on purpose
import datetime
import os
import shutil
import subprocess
import time

import bench  # noqa: E402 - sibling module
from bench import ACCEPT, MIB, PULL_REPO, RUNNING, WRK_DIR, Bench, Registry, children_cpu, fmt, free_port, log, median
from report import fmt_ratio, new_results_path, ratio  # noqa: E402 - sibling module

HERE = os.path.dirname(os.path.abspath(__file__))


class ProxyRegistry(Registry):
    """A registry in pull-through mode: Distribution's `proxy` section."""

    def __init__(self, rid, label, argv_prefix, bench_, upstream):
        super().__init__(rid, label, argv_prefix, "fs", bench_)
        self.upstream = upstream

    @property
    def key(self):
        return f"{self.id}-proxy"

    def config(self, location):
        return super().config(location) + f"proxy:\n  remoteurl: http://{self.upstream.addr}\n"


class Upstream(Registry):
    """The registry every proxy pulls from: Berth on the filesystem, with
    its request counts on a debug listener."""

    def __init__(self, bench_, berth):
        super().__init__("upstream", "Upstream", [berth, "serve", "--config"], "fs", bench_)
        self.metrics_port = None

    def config(self, location):
        self.metrics_port = free_port()
        text = super().config(location)
        return text.replace(
            "http:\n",
            f"http:\n  debug:\n    addr: 127.0.0.1:{self.metrics_port}\n    prometheus:\n      enabled: true\n",
            1,
        )

    def blob_gets(self):
        """Blob GETs the upstream has answered since it started."""
        _, _, body = bench.http_status(f"http://127.0.0.1:{self.metrics_port}/metrics")
        total = 0
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("berth_http_requests_total{") and 'route="blob"' in line and 'method="GET"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total


# Warm pulls measured one after another; their median is the figure.
WARM_PULLS = 5


def curl_pull(b, addr, repo, image, clients, what):
    """`clients` curl processes at once, each GETting the image's manifest by
    tag, its config and its layers on one connection. Returns MiB/s of all
    bytes received over the wall time, or None when any GET failed."""
    urls = [f"http://{addr}/v2/{repo}/manifests/{image['tag']}"]
    urls += [f"http://{addr}/v2/{repo}/blobs/{d['digest']}" for d in [image["config"]] + image["layers"]]
    argv = [b.args.curl, "-sS", "-H", f"Accept: {ACCEPT}", "-w", "%{http_code} %{size_download}\\n"]
    for url in urls:
        argv += ["-o", "/dev/null", url]
    b.commands.record(what, argv)
    started = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(clients)]
    outs = [p.communicate() for p in procs]
    elapsed = time.monotonic() - started
    received = 0
    for p, (out, err) in zip(procs, outs):
        lines = out.split()
        codes, sizes = lines[0::2], lines[1::2]
        if p.returncode != 0 or any(c != "200" for c in codes) or len(codes) != len(urls):
            b.note(f"{what}: a client failed: {codes} {err.strip()[-200:]}")
            return None
        received += sum(int(s) for s in sizes)
    if received != clients * image["bytes"]:
        b.note(f"{what}: received {received} bytes, expected {clients * image['bytes']}")
        return None
    return received / elapsed / MIB


FIGURES = [
    ("pt_cold_1", "Pull-through, cold pull of an 84 MiB image, 1 client", "MiB/s", "higher"),
    ("pt_cold_4", "Pull-through, cold pull of the same image by 4 clients at once", "MiB/s", "higher"),
    ("pt_upstream_gets_4", "Upstream blob GETs during the 4-client cold pull (the image has 4 blobs)", "GETs", "lower"),
    ("pt_warm_4", f"Pull-through, warm pull by 4 clients at once (median of {WARM_PULLS})", "MiB/s", "higher"),
    ("pt_warm_4_cpu", "CPU of the server per warm 4-client pull", "ms", "lower"),
    ("pt_warm_4_client_cpu", "CPU of the 4 curl clients per warm pull (the same for every server)", "ms", "lower"),
    ("pt_warm_blob_64m", "Pull-through, warm blob GET 64 MiB, 4 conns", "MiB/s", "higher"),
    ("pt_warm_tag_rps", "Pull-through, warm manifest GET by tag, 32 conns", "req/s", "higher"),
    ("pt_peak_rss", "Pull-through, peak RSS over cold and warm pulls (VmHWM)", "MiB", "lower"),
]


def static_tree(b):
    """The pull image as plain files at the paths a pull GETs, for nginx to
    serve: the same answers with no registry work behind them."""
    image = b.images["pull"]
    root = os.path.join(b.work, "static")
    repo = os.path.join(root, "v2", PULL_REPO)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(repo, "manifests"))
    os.makedirs(os.path.join(repo, "blobs"))

    def blob(digest):
        return os.path.join(image["layout"], "blobs", *digest.split(":"))

    os.link(blob(image["manifest"]["digest"]), os.path.join(repo, "manifests", image["tag"]))
    for d in [image["config"]] + image["layers"]:
        os.link(blob(d["digest"]), os.path.join(repo, "blobs", d["digest"]))
    return root


class PullThrough:
    def __init__(self, b):
        self.b = b
        a = b.args
        self.upstream = Upstream(b, a.berth)
        self.proxies = [ProxyRegistry("berth", "Berth", [a.berth, "serve", "--config"], b, self.upstream),
                        ProxyRegistry("dist28", "Distribution 2.8", [a.dist28, "serve"], b, self.upstream)]
        if a.dist3:
            self.proxies.append(ProxyRegistry("dist3", "Distribution v3", [a.dist3, "serve"], b, self.upstream))

    def run(self):
        b = self.b
        b.started = datetime.datetime.now()
        b.generate_images()
        log("seeding the upstream")
        b.seed(self.upstream)
        b.start_nginx(static_tree(b), f"v2/{PULL_REPO}/manifests/{b.images['pull']['tag']}")
        for rnd in range(b.args.rounds):
            log(f"round {rnd + 1}/{b.args.rounds}")
            for reg in b.rotate(self.proxies, rnd):
                self.pull_through(reg, rnd)
            self.static_pull(rnd)
        b.finished = datetime.datetime.now()

    def static_pull(self, rnd):
        """The warm pull from nginx serving the image as static files: what a
        server that does no registry work reaches on this machine."""
        b = self.b
        warm = [curl_pull(b, b.nginx_addr, PULL_REPO, b.images["pull"], 4, "pt_warm_4 nginx")
                for _ in range(WARM_PULLS)]
        rate = None if None in warm else median(warm)
        b.put("delivery", "pt_warm_4", "nginx", rnd, rate)
        log(f"  nginx: warm x4 {fmt(rate)} MiB/s")

    def pull_through(self, reg, rnd):
        b, image = self.b, self.b.images["pull"]
        for clients in (1, 4):
            location = reg.fresh_location(f"r{rnd}-cold{clients}")
            reg.start(location)
            before = self.upstream.blob_gets()
            v = curl_pull(b, reg.addr, PULL_REPO, image, clients, f"pt_cold_{clients} {reg.key}")
            b.put("delivery", f"pt_cold_{clients}", reg.id, rnd, v)
            if clients == 4:
                gets = self.upstream.blob_gets() - before
                b.put("delivery", "pt_upstream_gets_4", reg.id, rnd, gets)
                # Warm: the same server, its cache filled by the cold pull.
                # Several pulls, so that the figure is not one sub-second
                # sample taken while the cold fill's writes still settle.
                server0, clients0 = reg.proc.cpu_seconds(), children_cpu()
                warm = [curl_pull(b, reg.addr, PULL_REPO, image, 4, f"pt_warm_4 {reg.key}")
                        for _ in range(WARM_PULLS)]
                b.put("delivery", "pt_warm_4", reg.id, rnd, None if None in warm else median(warm))
                b.put("delivery", "pt_warm_4_cpu", reg.id, rnd,
                      (reg.proc.cpu_seconds() - server0) * 1000 / WARM_PULLS)
                b.put("delivery", "pt_warm_4_client_cpu", reg.id, rnd,
                      (children_cpu() - clients0) * 1000 / WARM_PULLS)
                blob = b.images["blobs"]["64MiB"]
                r = b.wrk(f"pt_warm_blob_64m {reg.key}", f"http://{reg.addr}/v2/{PULL_REPO}/blobs/{blob['digest']}",
                          bench.BLOB_CONNS, bench.BLOB_THREADS, os.path.join(WRK_DIR, "report.lua"), timeout="60s")
                b.put("delivery", "pt_warm_blob_64m", reg.id, rnd, r and r["mibps"])
                r = b.wrk(f"pt_warm_tag {reg.key}", f"http://{reg.addr}/v2/{PULL_REPO}/manifests/latest",
                          bench.MANIFEST_CONNS, bench.MANIFEST_THREADS, os.path.join(WRK_DIR, "report.lua"),
                          [f"Accept: {ACCEPT}"])
                b.put("delivery", "pt_warm_tag_rps", reg.id, rnd, r and r["rps"])
                hwm = reg.proc.status_kib().get("VmHWM")
                b.put("delivery", "pt_peak_rss", reg.id, rnd, hwm / 1024.0 if hwm else None)
                log(f"  {reg.key}: cold x4 {fmt(v)} MiB/s with {gets} upstream blob GETs, "
                    f"VmHWM {fmt(hwm and hwm / 1024)} MiB")
            else:
                log(f"  {reg.key}: cold x1 {fmt(v)} MiB/s")
            reg.stop()
            reg.drop_location(location)


def report(b, d):
    res = b.results.get("delivery", {})

    def m(fig, who):
        return median(res.get(fig, {}).get(who, []))

    def paired(fig, who, other):
        return median([ratio(x, y) for x, y in zip(res.get(fig, {}).get(who, []), res.get(fig, {}).get(other, []))])

    peers = [p for p in d.proxies if p.id != "berth"]
    lines = [f"# Pull-through benchmark, {b.started:%Y-%m-%d %H:%M}", "",
             f"`{b.args.command_line or 'bench/pull_through.py'}`; {b.args.rounds} rounds, servers in rotating order; "
             "medians over rounds, ratios per round then their median. The pull image: "
             f"{b.images['pull']['bytes'] / MIB:.0f} MiB (layers 16, 64 and 4 MiB).", "",
             "All in front of one upstream (Berth on the filesystem, release build).", "",
             "| Figure | Unit | Berth | " + " | ".join(p.label for p in peers) + " | "
             + " | ".join(f"Berth/{p.label.replace('Distribution ', 'Dist ')}" for p in peers) + " |",
             "|" + "---|" * (3 + 2 * len(peers))]
    for key, label, unit, better in FIGURES:
        row = [label + (" (lower is better)" if better == "lower" else ""), unit, fmt(m(key, "berth"))]
        row += [fmt(m(key, p.id)) for p in peers]
        row += ["—" if key in ("pt_upstream_gets_4", "pt_warm_4_client_cpu") else
                fmt_ratio(paired(key, "berth", p.id)) for p in peers]
        lines.append("| " + " | ".join(row) + " |")
    client_ms = m("pt_warm_4_client_cpu", "berth")
    if client_ms:
        # A warm pull cannot be faster than the clients alone can receive it
        # on this machine's cores, whatever the server costs.
        bound = 4 * b.images["pull"]["bytes"] / MIB / (client_ms / 1000 / os.cpu_count())
        lines += ["", f"The clients' CPU alone bounds a warm pull on these {os.cpu_count()} cores at "
                      f"{fmt(bound)} MiB/s, even with a server that costs nothing; so no server could reach more than "
                  + " or ".join(f"{bound / m('pt_warm_4', p.id):.2f}x {p.label}" for p in peers if m("pt_warm_4", p.id))
                  + " there."]
    static = m("pt_warm_4", "nginx")
    if static:
        # The same warm pull from a server with no registry work to do.
        lines += ["", f"nginx (sendfile on, no access log) serving the same image as static files at the same paths, "
                      f"pulled the same way, reached {fmt(static)} MiB/s: "
                  + ", ".join(f"{fmt_ratio(paired('pt_warm_4', 'nginx', p.id))} {p.label}" for p in peers)
                  + ". It routes nothing, reads no links and checks no digests; Berth's warm pull was "
                  + f"{fmt_ratio(paired('pt_warm_4', 'berth', 'nginx'))} of it."]
    lines += ["", "## Per round", "", "| Figure | Server | " + " | ".join(f"round {i + 1}" for i in range(b.args.rounds)) + " |",
              "|" + "---|" * (2 + b.args.rounds)]
    for key, _, _, _ in FIGURES:
        for who, vals in res.get(key, {}).items():
            lines.append(f"| {key} | {who} | " + " | ".join(fmt(v) for v in vals) + " |")
    if b.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in b.notes]
    path = new_results_path(b.args.results, f"{b.started:%Y-%m-%d}-pull-through")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--berth", required=True)
    p.add_argument("--dist28", required=True)
    p.add_argument("--dist3", default="")
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--skopeo", default="skopeo")
    p.add_argument("--curl", default="curl")
    p.add_argument("--nginx", default="/usr/sbin/nginx")
    p.add_argument("--no-private-blob-cache", dest="private_blob_cache", action="store_false")
    p.add_argument("--command-line", default="")
    args = p.parse_args()
    b = Bench(args)
    d = PullThrough(b)
    failed = None
    try:
        d.run()
    except Exception as e:  # noqa: BLE001 - still report what was measured
        failed = e
        b.note(f"the run stopped early: {type(e).__name__}: {e}")
        b.finished = datetime.datetime.now()
    finally:
        for proc in RUNNING:
            proc.stop()
    path = report(b, d)
    log(f"results written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
