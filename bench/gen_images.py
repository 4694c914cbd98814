#!/usr/bin/env python3
"""Generate the benchmark's OCI image layouts.

Every layer is random bytes (seeded, so two runs make the same digests)
wrapped in a gzip stream of stored blocks: clients see a valid gzip layer
that nothing can compress, so no client or server saves work by compressing,
and skopeo pushes each layer as it is (--preserve-digests).

A layer spec is a comma-separated list of SIZE or SIZE:NAME. SIZE takes a
K, M or G suffix (powers of 1024). Layers with the same NAME are the same
bytes in every image that lists them: the shared base layers.

Output (in OUT):
  pull/            OCI layout of the image the pull figures read (tag latest)
  push-0 ...       OCI layouts of the images the push figures write (tag latest)
  mix.blob         the blob the mixed load pushes over and over
  www/             what nginx serves: manifest.json and blob-<size>
  images.json      digests, sizes and paths of all of the above
"""

import argparse
import hashlib
import json
import os
import random
import sys
import zlib

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse_layers(spec):
    layers = []
    for item in spec.split(","):
        size, _, name = item.partition(":")
        layers.append((parse_size(size), name or None))
    return layers


def incompressible_gzip(size, seed):
    """`size` random bytes (from `seed`) as a gzip stream of stored blocks."""
    raw = random.Random(seed).randbytes(size)
    c = zlib.compressobj(0, zlib.DEFLATED, 31)
    return c.compress(raw) + c.flush()


class Layout:
    """An OCI image layout being written."""

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def add(self, data, media_type):
        hexd = hashlib.sha256(data).hexdigest()
        blob = os.path.join(self.path, "blobs", "sha256", hexd)
        if not os.path.exists(blob):
            with open(blob, "wb") as f:
                f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + hexd, "size": len(data)}

    def link(self, source, desc):
        """Adds the blob `desc` by hard link from `source` (a blob file)."""
        blob = os.path.join(self.path, "blobs", "sha256", desc["digest"].split(":", 1)[1])
        if not os.path.exists(blob):
            os.link(source, blob)
        return dict(desc)

    def blob_path(self, desc):
        return os.path.join(self.path, "blobs", "sha256", desc["digest"].split(":", 1)[1])

    def finish(self, layers, tag):
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
            "config": {},
        }
        cdesc = self.add(json.dumps(config, sort_keys=True).encode(), MEDIA_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": cdesc, "layers": layers}
        mbytes = json.dumps(manifest, indent=2).encode()
        mdesc = self.add(mbytes, MEDIA_MANIFEST)
        index = {
            "schemaVersion": 2,
            "manifests": [dict(mdesc, annotations={"org.opencontainers.image.ref.name": tag})],
        }
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump(index, f)
        total = cdesc["size"] + mdesc["size"] + sum(l["size"] for l in layers)
        return {
            "layout": self.path,
            "tag": tag,
            "manifest": mdesc,
            "config": cdesc,
            "layers": layers,
            "bytes": total,
        }


def build_image(path, spec, shared, seed_base):
    layout = Layout(path)
    image = os.path.basename(path)
    layers = []
    for position, (size, name) in enumerate(spec):
        if name and name in shared:
            src, desc = shared[name]
            layers.append(layout.link(src, desc))
            continue
        seed = f"{seed_base}/{name}/{size}" if name else f"{seed_base}/{image}/{position}/{size}"
        desc = layout.add(incompressible_gzip(size, seed), MEDIA_LAYER)
        if name:
            shared[name] = (layout.blob_path(desc), desc)
        layers.append(desc)
    return layout.finish(layers, "latest")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--pull", default="16M:base-a,64M,4M", help="layers of the pull image (default %(default)s)")
    p.add_argument("--push", default="16M:base-a,4M:base-b,32M,8M,1M,256K", help="layers of each push image (default %(default)s)")
    p.add_argument("--push-images", type=int, default=4, help="how many push images (default %(default)s)")
    p.add_argument("--mix-blob", default="4M", help="size of the blob the mixed load pushes (default %(default)s)")
    p.add_argument("--seed", default="berth-bench-1")
    args = p.parse_args()

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    shared = {}
    pull = build_image(os.path.join(out, "pull"), parse_layers(args.pull), shared, args.seed)
    pushes = [
        build_image(os.path.join(out, f"push-{i}"), parse_layers(args.push), shared, args.seed)
        for i in range(args.push_images)
    ]

    mix = incompressible_gzip(parse_size(args.mix_blob), f"{args.seed}/mix")
    mix_path = os.path.join(out, "mix.blob")
    with open(mix_path, "wb") as f:
        f.write(mix)

    # What nginx serves: the pull manifest and each distinct pull layer size.
    www = os.path.join(out, "www")
    os.makedirs(www, exist_ok=True)
    layout = Layout(pull["layout"])
    manifest_file = os.path.join(www, "manifest.json")
    if not os.path.exists(manifest_file):
        os.link(layout.blob_path(pull["manifest"]), manifest_file)
    blobs = {}
    for layer, (size, name) in zip(pull["layers"], parse_layers(args.pull)):
        if name:
            continue  # the figures read the pull image's own layers
        label = f"{size >> 20}MiB" if size % (1 << 20) == 0 else f"{size}B"
        served = os.path.join(www, f"blob-{label}")
        if not os.path.exists(served):
            os.link(layout.blob_path(layer), served)
        blobs[label] = dict(layer, raw_size=size, file=served)

    info = {
        "pull": pull,
        "push": pushes,
        "mix_blob": {"path": mix_path, "digest": "sha256:" + hashlib.sha256(mix).hexdigest(), "size": len(mix)},
        "www": www,
        "manifest_file": manifest_file,
        "blobs": blobs,
        "spec": {"pull": args.pull, "push": args.push, "push_images": args.push_images, "mix_blob": args.mix_blob, "seed": args.seed},
    }
    with open(os.path.join(out, "images.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps({"out": out, "pull_bytes": pull["bytes"], "push_bytes_each": [x["bytes"] for x in pushes]}))


if __name__ == "__main__":
    sys.exit(main())
