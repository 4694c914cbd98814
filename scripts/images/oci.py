#!/usr/bin/env python3
"""Pack a root filesystem into an OCI image layout, without a container engine.

    oci.py --rootfs DIR --out LAYOUT --name REPOSITORY --tag TAG
           [--entrypoint ARG]... [--cmd ARG]... [--user UID:GID]
           [--port 5000/tcp]... [--volume PATH]... [--env K=V]... [--label K=V]...

The image has one layer, a gzip-compressed tar of DIR. The layer is
reproducible: entries sorted by path, every timestamp zero, owners kept as
numbers (so files made for the nonroot user stay its), no user or group names.
The same rootfs always gives the same digests. LAYOUT's index.json names the
manifest with `org.opencontainers.image.ref.name` (the tag) and
`io.containerd.image.name` (REPOSITORY:TAG), which `ctr images import` uses.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = "1970-01-01T00:00:00Z"


def architecture():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def layer_tar(rootfs):
    """The uncompressed tar of rootfs, as bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for directory, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs + files):
                paths.append(os.path.join(directory, name))
        for path in sorted(paths, key=lambda p: os.path.relpath(p, rootfs)):
            info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
            info.mtime = 0
            info.uname = info.gname = ""
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def gzipped(data):
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)
    return buffer.getvalue()


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def pairs(values):
    return dict(v.split("=", 1) for v in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rootfs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--cmd", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--port", action="append", default=[])
    parser.add_argument("--volume", action="append", default=[])
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--label", action="append", default=[])
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(os.path.join(args.out, "blobs", "sha256"))

    tar = layer_tar(args.rootfs)
    layer = write_blob(args.out, gzipped(tar))
    layer["mediaType"] = OCI_LAYER_GZIP

    config = {"Env": args.env or ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    if args.entrypoint:
        config["Entrypoint"] = args.entrypoint
    if args.cmd:
        config["Cmd"] = args.cmd
    if args.user:
        config["User"] = args.user
    if args.port:
        config["ExposedPorts"] = {p: {} for p in args.port}
    if args.volume:
        config["Volumes"] = {v: {} for v in args.volume}
    if args.label:
        config["Labels"] = pairs(args.label)
    image_config = {
        "created": EPOCH,
        "architecture": architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": EPOCH, "created_by": "scripts/images/oci.py"}],
    }
    config_blob = write_blob(args.out, json.dumps(image_config, sort_keys=True).encode())
    config_blob["mediaType"] = OCI_CONFIG

    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob,
        "layers": [layer],
        "annotations": {"org.opencontainers.image.created": EPOCH},
    }
    manifest_blob = write_blob(args.out, json.dumps(manifest, sort_keys=True).encode())
    manifest_blob["mediaType"] = OCI_MANIFEST
    manifest_blob["platform"] = {"architecture": architecture(), "os": "linux"}
    manifest_blob["annotations"] = {
        "org.opencontainers.image.ref.name": args.tag,
        "io.containerd.image.name": f"{args.name}:{args.tag}",
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_blob]}
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(args.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"{args.name}:{args.tag} {manifest_blob['digest']} ({layer['size']} bytes compressed) -> {args.out}")


if __name__ == "__main__":
    main()
