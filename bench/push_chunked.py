#!/usr/bin/env python3
"""Push an OCI layout to a registry with chunked uploads.

For every blob: POST /v2/<repo>/blobs/uploads/, then PATCH chunks of
--chunk-size bytes with Content-Range and Content-Length, then
PUT ?digest=<digest> with an empty body. Then PUT the manifest by tag.
One keep-alive HTTP/1.1 connection, plain HTTP. Prints one JSON line:
{"bytes": N, "seconds": S, "requests": R}.
"""

import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse

MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json"


class Client:
    def __init__(self, addr):
        host, _, port = addr.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=300)
        self.requests = 0

    def call(self, method, path, body=None, headers=None, expect=(200, 201, 202, 204)):
        self.conn.request(method, path, body=body, headers=headers or {})
        self.requests += 1
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status not in expect:
            raise SystemExit(f"{method} {path}: {resp.status} {data[:300]!r}")
        return resp

    @staticmethod
    def relative(location):
        """The path and query of a Location (Distribution answers absolute URLs)."""
        u = urllib.parse.urlsplit(location)
        return u.path + (("?" + u.query) if u.query else "")


def with_query(path, key, value):
    return path + ("&" if "?" in path else "?") + urllib.parse.urlencode({key: value})


def push_blob(client, repo, path, digest, size, chunk_size):
    resp = client.call("POST", f"/v2/{repo}/blobs/uploads/", body=b"", headers={"Content-Length": "0"}, expect=(202,))
    location = client.relative(resp.getheader("Location"))
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            chunk = f.read(chunk_size)
            end = offset + len(chunk) - 1
            resp = client.call(
                "PATCH",
                location,
                body=chunk,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(chunk)),
                },
                expect=(202,),
            )
            location = client.relative(resp.getheader("Location"))
            offset += len(chunk)
    client.call("PUT", with_query(location, "digest", digest), body=b"", headers={"Content-Length": "0"}, expect=(201,))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("registry", help="host:port")
    p.add_argument("layout", help="OCI layout directory (first manifest of index.json)")
    p.add_argument("repo")
    p.add_argument("--tag", default="latest")
    p.add_argument("--chunk-size", type=int, default=5 << 20)
    args = p.parse_args()

    blobs_dir = os.path.join(args.layout, "blobs", "sha256")
    with open(os.path.join(args.layout, "index.json")) as f:
        mdesc = json.load(f)["manifests"][0]
    mpath = os.path.join(blobs_dir, mdesc["digest"].split(":", 1)[1])
    with open(mpath, "rb") as f:
        manifest_bytes = f.read()
    manifest = json.loads(manifest_bytes)

    client = Client(args.registry)
    started = time.monotonic()
    total = 0
    for desc in [manifest["config"]] + manifest["layers"]:
        path = os.path.join(blobs_dir, desc["digest"].split(":", 1)[1])
        push_blob(client, args.repo, path, desc["digest"], desc["size"], args.chunk_size)
        total += desc["size"]
    client.call(
        "PUT",
        f"/v2/{args.repo}/manifests/{args.tag}",
        body=manifest_bytes,
        headers={"Content-Type": manifest.get("mediaType", MANIFEST_TYPES)},
        expect=(201,),
    )
    total += len(manifest_bytes)
    print(json.dumps({"bytes": total, "seconds": time.monotonic() - started, "requests": client.requests}))


if __name__ == "__main__":
    sys.exit(main())
