"""Writes bench/results/<date>.md from a finished bench.Bench run."""

import os
import platform
import subprocess

from bench import COLD_GETS, FIGURES, FIGURE_INFO, NODE_CACHE_BYTES, ROOT, fmt, median

DRIVER_TITLES = {
    "fs": "filesystem driver",
    "s3": "s3 driver, against MinIO on loopback",
    "nodecache": "node cache (s3 on MinIO behind berth.nodecache) against the filesystem driver and MinIO",
}
CEILINGS = {
    "fs": {
        "manifest": "nginx, same file",
        "blob": "nginx sendfile, same file",
        "push": "disk: dd conv=fsync",
    },
    "s3": {
        "manifest": "MinIO GET, same object",
        "blob": "MinIO GET, same object",
        "push": "MinIO PUT (curl), same bytes",
    },
}


def sh(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def first_line(text):
    return text.splitlines()[0] if text else ""


def machine():
    mem = ""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    debian = ""
    if os.path.exists("/etc/debian_version"):
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    return [
        ("nproc", sh(["nproc"])),
        ("CPU", cpu),
        ("memory", mem),
        ("kernel", platform.release()),
        ("OS", f"Debian {debian}" if debian else platform.platform()),
    ]


def versions(b):
    a = b.args
    rev = sh(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"])
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--", "registry", "Cargo.toml", "Cargo.lock"])
    berth = f"git {rev}" + (" with uncommitted changes under registry/ or Cargo.*" if dirty else "")
    rows = [
        ("berth-registry", f"{berth}; `cargo build --release -p berth-registry`; {first_line(sh(['rustc', '--version']))}"),
        ("Distribution 2.8", first_line(sh([a.dist28, "--version"])) + " (Debian package docker-registry)"),
    ]
    if a.dist3:
        rows.append(("Distribution v3", first_line(sh([a.dist3, "--version"])) + " (built from the Go module proxy, pinned v3.1.2)"))
    rows.append(("zot", a.zot_version if a.zot else f"not run: {a.zot_missing}"))
    rows += [
        ("nginx", first_line(sh([a.nginx, "-v"]))),
        ("MinIO", first_line(sh([a.minio, "--version"])) + " (pinned in scripts/tools.sh)" if a.minio else "not run"),
        ("wrk", first_line(sh([a.wrk, "-v"]))),
        ("skopeo", first_line(sh([a.skopeo, "--version"]))),
        ("curl", first_line(sh([a.curl, "--version"]))),
        ("Go (builds)", first_line(sh(["go", "version"]))),
        ("python3", platform.python_version()),
    ]
    return rows


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def ceiling_label(driver, figure):
    if figure.startswith("nodecache"):
        return "MinIO GET (curl), same bytes"
    if figure.startswith("manifest"):
        return CEILINGS[driver]["manifest"]
    if figure.startswith("blob"):
        return CEILINGS[driver]["blob"]
    if figure.startswith("push"):
        return CEILINGS[driver]["push"]
    return None


def table(b, driver):
    regs = b.regs[driver]
    res = b.results.get(driver, {})
    head = ["Figure", "Unit"] + [r.label for r in regs]
    peers = [r for r in regs if r.id != "berth"]
    head += [f"Berth/{r.label.replace('Distribution ', 'Dist ')}" for r in peers]
    head += ["Ceiling", "Berth/ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, better in FIGURES:
        if key not in res:
            continue
        med = {who: median(vals) for who, vals in res[key].items()}
        berth = med.get(f"berth-{driver}")
        row = [label + (" (lower is better)" if better == "lower" else ""), unit]
        row += [fmt(med.get(r.key)) for r in regs]
        row += [fmt_ratio(ratio(berth, med.get(r.key))) for r in peers]
        c = med.get("ceiling")
        if c is not None:
            row += [f"{fmt(c)} ({ceiling_label(driver, key)})", fmt_ratio(ratio(berth, c))]
        else:
            row += ["—", "—"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# The speed targets: (driver, figure, [(peer, bound)]). A peer is a server id
# among that driver's registries (for nodecache, "berthfs" is Berth on the
# filesystem driver) or "ceiling"; for a figure where higher is better Berth/peer must be at least
# the bound, where lower is better at most the bound ("below" is a bound of 1).
# Judged on the median of the per-round ratios.
TARGETS = [
    ("fs", "manifest_tag_rps", [("dist28", 10), ("zot", 2), ("ceiling", 0.5)]),
    ("fs", "manifest_tag_p99", [("dist28", 1), ("zot", 1), ("ceiling", 1)]),
    ("fs", "manifest_digest_rps", [("dist28", 10), ("zot", 2), ("ceiling", 0.5)]),
    ("fs", "manifest_digest_p99", [("dist28", 1), ("zot", 1), ("ceiling", 1)]),
    ("fs", "blob_4m", [("ceiling", 1.0)]),
    ("fs", "blob_64m", [("ceiling", 1.0)]),
    ("fs", "push_skopeo_1", [("dist28", 1.5), ("zot", 1.2)]),
    ("fs", "push_skopeo_4", [("dist28", 1.5), ("zot", 1.2)]),
    ("fs", "push_chunked_1", [("dist28", 1.5), ("zot", 1.2)]),
    ("fs", "push_chunked_4", [("dist28", 1.5), ("zot", 1.2)]),
    ("fs", "peak_rss", [("dist28", 0.15), ("zot", 0.5)]),
    ("s3", "manifest_tag_rps", [("dist3", 2)]),
    ("s3", "manifest_digest_rps", [("dist3", 2)]),
    ("s3", "blob_4m", [("ceiling", 0.9)]),
    ("s3", "blob_64m", [("ceiling", 0.9)]),
    ("s3", "push_skopeo_4", [("dist3", 1.5)]),
    ("s3", "push_chunked_4", [("dist3", 1.5)]),
    ("nodecache", "nodecache_warm_64m", [("berthfs", 0.9)]),
    ("nodecache", "nodecache_cold_64m", [("ceiling", 0.8)]),
]


def targets(b):
    """A table of the targets, one row per figure and peer."""
    head = ["Driver", "Figure", "Target", "Berth", "Other", "Ratio of medians", "Per round: median (range)",
            "Verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for driver, fig, bounds in TARGETS:
        res = b.results.get(driver, {}).get(fig)
        if not res:
            continue
        label, unit, better = FIGURE_INFO[fig]
        berth = res.get(f"berth-{driver}", [])
        for peer, bound in bounds:
            who = peer if peer == "ceiling" else next((r.key for r in b.regs[driver] if r.id == peer), None)
            other = res.get(who)
            if other is None:
                continue
            name = ceiling_label(driver, fig) if peer == "ceiling" else server_label(b, driver, who)
            per_round = [r for r in (ratio(x, y) for x, y in zip(berth, other)) if r is not None]
            judged = median(per_round)
            if better == "higher":
                goal = f"≥{bound:g}x {name}"
                ok = judged is not None and judged >= bound
            elif bound == 1:
                goal = f"below {name}"
                ok = judged is not None and judged < 1
            else:
                goal = f"≤{bound:g}x {name}"
                ok = judged is not None and judged <= bound
            spread = f"{fmt_ratio(judged)} ({fmt_ratio(min(per_round))}–{fmt_ratio(max(per_round))})" if per_round else "n/a"
            verdict = "n/a" if judged is None else ("met" if ok else "**missed**")
            lines.append("| " + " | ".join([
                driver, label, goal, f"{fmt(median(berth))} {unit}", f"{fmt(median(other))} {unit}",
                fmt_ratio(ratio(median(berth), median(other))), spread, verdict]) + " |")
    return "\n".join(lines)


def cold_fill_bound(b):
    """What bounds the cold node cache figure on this machine: the CPU a fill
    at the target may use, against the least a verified fill spends."""
    res = b.results.get("nodecache", {})
    key = next((r.key for r in b.regs.get("nodecache", []) if r.driver == "nodecache"), None)
    direct = median(res.get("nodecache_cold_64m", {}).get("ceiling", []))
    others = median(res.get("nodecache_cold_others_cpu", {}).get(key, []))
    used = median(res.get("nodecache_cold_cpu", {}).get(key, []))
    floor = median(b.fill_floor)
    if None in (direct, others, used, floor):
        return None
    target = next(share for _, fig, bounds in TARGETS if fig == "nodecache_cold_64m" for _, share in bounds)
    size = b.images["blobs"]["64MiB"]["size"] / (1 << 20)
    at_target = size / (target * direct) * 1000
    cores = os.cpu_count()
    return (f"At {target:g}x MinIO's GET, a cold GET of the {size:.0f} MiB layer takes {at_target:.0f} ms: "
            f"{cores * at_target:.0f} ms of CPU on these {cores} cores, if every core is busy all along. MinIO and curl "
            f"used {others:.0f} ms per fill, which leaves Berth at most {cores * at_target - others:.0f} ms. Hashing "
            f"the {size:.0f} MiB (sha256) while writing them to a file, the least a verified fill does, takes "
            f"{floor:.0f} ms of CPU on this machine (Python's hashlib and os.write, no network, the least of 3 tries "
            f"per round), before a relay's two socket copies; Berth used {used:.0f} ms per fill.")


def server_label(b, driver, key):
    return next(r.label for r in b.regs[driver] if r.key == key)


def per_round(b):
    lines = []
    for driver in b.regs:
        lines.append(f"\n{DRIVER_TITLES[driver]}:\n")
        lines.append("| Figure | Server | " + " | ".join(f"round {i + 1}" for i in range(b.args.rounds)) + " |")
        lines.append("|" + "---|" * (2 + b.args.rounds))
        for key, _, _, _ in FIGURES:
            for who, vals in b.results.get(driver, {}).get(key, {}).items():
                lines.append(f"| {key} | {who} | " + " | ".join(fmt(v) for v in vals) + " |")
    return "\n".join(lines)


def new_results_path(directory, stem):
    """`directory/stem.md`, or the first of `stem-2.md`, `stem-3.md`, ...
    that does not exist: a run never overwrites an earlier run's results."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{stem}.md")
    n = 2
    while os.path.exists(path):
        path = os.path.join(directory, f"{stem}-{n}.md")
        n += 1
    return path


def write(b):
    path = new_results_path(b.args.results, b.started.strftime("%Y-%m-%d"))
    img = b.images
    pull, push = img["pull"], img["push"]
    a = b.args
    load = sh(["cat", "/proc/loadavg"])
    doc = []
    doc.append(f"# Benchmark: Berth vs CNCF Distribution and zot, {b.started:%Y-%m-%d}\n")
    doc.append(
        f"Run by `{a.command_line or 'bench/run.sh'}` from {b.started:%Y-%m-%d %H:%M} to {b.finished:%H:%M} "
        f"({(b.finished - b.started).seconds // 60} min): {a.rounds} interleaved round{'s' if a.rounds != 1 else ''}, "
        f"{a.duration} s per wrk run. "
        "Every figure is the median over the rounds. Within a round every figure is measured on every server "
        "before the next figure, in an order that rotates each round. The machine was shared with other "
        f"builds and tests while this ran (load average {b.load_start or '?'} at the start, "
        f"{' '.join(load.split()[:3])} at the end), so single numbers "
        "are noisy; read the ratios, and the per-round values at the end.\n"
    )
    doc.append("Ratios are Berth divided by the other. For req/s and MiB/s higher is better; for p99 latency "
               "and RSS lower is better, so a ratio below 1 favours Berth there.\n")
    if not a.zot:
        doc.append(f"zot is not in this run: {a.zot_missing}\n")

    doc.append("## Machine\n")
    doc += [f"- {k}: {v}" for k, v in machine()]
    doc.append("")
    doc.append("## Versions\n")
    doc += [f"- {k}: {v}" for k, v in versions(b)]
    doc.append("")
    for driver in b.regs:
        doc.append(f"## Results, {DRIVER_TITLES[driver]}\n")
        doc.append(table(b, driver))
        doc.append("")
        bound = cold_fill_bound(b) if driver == "nodecache" else None
        if bound:
            doc.append(bound + "\n")
    doc.append("## Targets\n")
    doc.append("Each row gives the ratio of the medians (as in the tables) and the per-round ratios: their "
               "median and range. A target is judged on the median of the per-round ratios, which compares two "
               "servers measured within seconds of each other, so that the machine's drift from one round to the "
               "next cancels out.\n")
    doc.append(targets(b))
    doc.append("")

    def mib(n):
        return f"{n / (1 << 20):.2f} MiB"

    doc.append("## Workload\n")
    doc.append(
        "Berth and both Distributions get the same `config.yml` (the `registry:2` image's stock file: info "
        "logging with access logs, `storage.cache.blobdescriptor: inmemory`, health checks), plus "
        "`storage.delete.enabled`, `storage.redirect.disable: true` (clients get the bytes from the registry, "
        "not a pre-signed URL), and the storage under test. zot gets its own `config.json`: no garbage "
        "collection, no deduplication, the storage under test, and error logging (zot then writes no access "
        "log, which favours it). Servers run with an empty environment but PATH and HOME. Same images and "
        "clients for all, generated by `bench/gen_images.py` with seed "
        f"`{img['spec']['seed']}`: layers are random bytes in gzip streams of stored blocks (incompressible, "
        "valid gzip).\n"
    )
    doc.append(f"- pull image `{'bench/pull:latest'}`: layers `{img['spec']['pull']}` ({mib(pull['bytes'])}), "
               f"manifest {pull['manifest']['size']} bytes, `{pull['manifest']['digest']}`")
    doc.append(f"- push images, one per client: layers `{img['spec']['push']}` (names are base layers shared by "
               f"all push images), {mib(push[0]['bytes'])} each")
    doc.append("- manifest GET: wrk, 32 connections, 2 threads, `Accept` listing the OCI and Docker manifest and "
               "index types; by tag (`latest`) and by digest")
    doc.append(f"- blob GET: wrk, 4 connections, 2 threads, the pull image's 4 MiB and 64 MiB layers "
               f"({mib(img['blobs']['4MiB']['size'])} and {mib(img['blobs']['64MiB']['size'])} with the gzip framing)")
    doc.append("- push, skopeo: `skopeo copy --preserve-digests` of one image per client into its own repository, "
               "into a freshly started server on fresh storage, after a `sync`; each blob goes up as POST, one streamed PATCH, "
               "PUT. Each skopeo process gets an empty blob-location cache, so nothing is mounted across "
               "repositories or rounds. MiB/s = bytes of all the images / wall time from the first client's "
               "start to the last one's end.")
    doc.append(f"- push, chunked: `bench/push_chunked.py`, POST, PATCH chunks of {mib(a.chunk_size)} with "
               "Content-Range, PUT ?digest=, then the manifest; otherwise as skopeo")
    doc.append(f"- mixed: `bench/wrk/mixed.lua`, 4 connections, each repeating 6 pulls (manifest by tag, by digest, "
               f"the 4 MiB blob) and 1 push of a {mib(img['mix_blob']['size'])} blob (POST, PUT with the body): "
               "75% of requests and of blob bytes are pulls. Each server is restarted before it, so its VmHWM "
               "(from /proc/PID/status, read when wrk ends) is the peak RSS of this load.")
    doc.append(f"- ceilings: nginx {first_line(sh([a.nginx, '-v'])).split('/')[-1]} (sendfile on, access_log off) serving the "
               "same manifest and blob files; the disk as `dd conv=fsync` of "
               f"{a.dd_mib} MiB; MinIO's own GET (wrk on a pre-signed URL) and PUT (curl --aws-sigv4) for s3")
    doc.append(f"- node cache: Berth on s3 with `berth.nodecache` (bound {NODE_CACHE_BYTES >> 30} GiB). Warm: wrk as for "
               "blob GET on the 64 MiB layer, once cached, against Berth serving the same layer from the filesystem "
               f"driver. Cold: {COLD_GETS} times a round, the server is restarted on an emptied cache and one curl GET "
               "of the layer (a fill from MinIO, streamed while written) alternates with one curl GET of the same bytes "
               "straight from MinIO (pre-signed URL); the median of each")
    doc.append("")
    doc.append("## Commands\n")
    doc.append("The run: `make bench` (`bench/run.sh`, which provisions the tools, builds berth-registry and "
               "then runs `bench/bench.py`). Below, exactly as run, the servers, Berth's command for each "
               "figure and the ceilings'; the peers' commands are Berth's with their own port. Every command "
               f"of the run is in `{b.commands.path}`.\n")
    doc.append("```")
    for what, line in b.commands.first.items():
        parts = what.split()
        who = parts[-1] if len(parts) > 1 else ""
        if what.startswith(("server", "generate", "seed minio", "ceiling")) or who.startswith("berth") \
                or who in ("nginx", "minio"):
            doc.append(f"# {what}\n{line}")
    doc.append("```\n")
    doc.append("With 4 clients, 4 such push commands run at once: `push-0` to `push-3` into `bench/push-0` to "
               "`bench/push-3`. Each server start writes its own config file; apart from the port and the "
               "storage location they are all one of these: `config.yml` for Berth and both Distributions, "
               "`config.json` for zot.\n")
    for (name, driver), text in sorted(b.configs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "config.yml")):
        doc.append(f"`{name}`, {DRIVER_TITLES[driver]}:\n")
        doc.append("```yaml" if name.endswith(".yml") else "```json")
        doc.append(text.rstrip("\n"))
        doc.append("```\n")
    if b.notes:
        doc.append("## Notes from the run\n")
        doc += [f"- {n}" for n in b.notes]
        doc.append("")
    doc.append("## Per-round values")
    doc.append(per_round(b))
    doc.append("")
    with open(path, "w") as f:
        f.write("\n".join(doc))
    return path
