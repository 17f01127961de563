"""Drives Berth with PyPI's `oras` client: push an artifact (monolithic and chunked),
pull it back, list tags, attach a referrer with a subject, discover it through the
referrers API. Exits non-zero with a message on the first mismatch; prints OK."""

import hashlib
import os
import sys

import oras.client
import oras.oci
import requests

host, workdir = sys.argv[1], sys.argv[2]
os.chdir(workdir)
client = oras.client.OrasClient(hostname=host, insecure=True)
repo = f"{host}/oras/artifact"


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


files = {"readme.txt": b"hello from the oras test\n", "data.bin": os.urandom(3 * 1024 * 1024 + 7)}
for name, content in files.items():
    with open(name, "wb") as f:
        f.write(content)
with open("config.json", "w") as f:
    f.write("{}")

r = client.push(target=f"{repo}:v1", files=list(files), manifest_config="config.json:application/vnd.example.config.v1+json")
check(r.status_code == 201, f"push v1 answered {r.status_code}")
r = client.push(target=f"{repo}:v2", files=list(files), do_chunked=True, chunk_size=1024 * 1024)
check(r.status_code == 201, f"chunked push v2 answered {r.status_code}")

for tag in ("v1", "v2"):
    out = os.path.join(workdir, f"out-{tag}")
    pulled = client.pull(target=f"{repo}:{tag}", outdir=out)
    got = {os.path.basename(p): open(p, "rb").read() for p in pulled}
    check(got == files, f"pulled {tag} differs: {sorted(got)}")

tags = client.get_tags(repo)
check(sorted(tags) == ["v1", "v2"], f"tags {tags}")

base = f"http://{host}/v2/oras/artifact"
head = requests.head(f"{base}/manifests/v1", headers={"Accept": oras.defaults.default_manifest_media_type})
check(head.status_code == 200, f"HEAD manifest {head.status_code}")
digest = head.headers["Docker-Content-Digest"]
size = int(head.headers["Content-Length"])

with open("signature.json", "w") as f:
    f.write('{"signed": true}')
with open("sig-config.json", "w") as f:
    f.write("{}")
subject = oras.oci.Subject(mediaType=oras.defaults.default_manifest_media_type, digest=digest, size=size)
r = client.push(
    target=f"{repo}:signature",
    files=["signature.json"],
    subject=subject,
    manifest_config="sig-config.json:application/vnd.example.signature.v1",
    manifest_annotations={"org.example.signer": "oras-test"},
)
check(r.status_code == 201, f"push referrer answered {r.status_code}")
check(r.headers.get("OCI-Subject") == digest, f"OCI-Subject header {r.headers.get('OCI-Subject')}")

refs = requests.get(f"{base}/referrers/{digest}")
check(refs.status_code == 200, f"referrers answered {refs.status_code}")
check(refs.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json", refs.headers["Content-Type"])
found = refs.json()["manifests"]
check(len(found) == 1, f"referrers {found}")
check(found[0]["artifactType"] == "application/vnd.example.signature.v1", found[0])
check(found[0]["annotations"].get("org.example.signer") == "oras-test", found[0])
sig_manifest = requests.get(f"{base}/manifests/signature", headers={"Accept": oras.defaults.default_manifest_media_type}).content
check(found[0]["digest"] == "sha256:" + hashlib.sha256(sig_manifest).hexdigest(), "referrer digest")

filtered = requests.get(f"{base}/referrers/{digest}", params={"artifactType": "application/vnd.example.signature.v1"})
check(filtered.headers.get("OCI-Filters-Applied") == "artifactType", filtered.headers)
check(len(filtered.json()["manifests"]) == 1, "filtered referrers")
other = requests.get(f"{base}/referrers/{digest}", params={"artifactType": "application/vnd.example.sbom"})
check(other.json()["manifests"] == [], "filter for another type")
print("OK")
