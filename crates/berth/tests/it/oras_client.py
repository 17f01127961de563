"""Drives Berth with PyPI's `oras` client (oras-py), for `clients_oras.rs`.

Usage: BERTH_TEST_USER=... BERTH_TEST_PASSWORD=... python3 oras_client.py HOST:PORT WORKDIR

The client authenticates with the user and password from the environment, sent as Basic
credentials straight to /v2 (oras-py's `basic` auth backend answers each 401 with them); the
script's own checks send them the same way. Not oras-py's default `token` backend: in 0.2.43
it keeps the first token it gets (a pull token, for the HEAD that checks whether a blob
exists) and, on the 401 `insufficient_scope` of the push that follows, sends that token
again instead of asking for one with push (it asks anew only after a 403), so it can't push
to a registry that issues tokens per scope, as distribution and Berth do.

Pushes an artifact (two files with their own media types, a config of its own media type,
manifest annotations), pushes a second one chunked, pulls both back and compares bytes,
lists tags, attaches two referrers to the first artifact (a signature with an explicit
`artifactType` over an empty config, built and uploaded with oras-py's lower-level
functions and pushed by digest; an SBOM pushed with `push(subject=...)`, whose artifact
type is its config's media type), discovers them through the referrers API
(`GET /v2/<name>/referrers/<digest>`, with and without `?artifactType=`), then deletes the
signature and sees it leave the list.

Exits non-zero with `FAILED: ...` on the first mismatch. On success prints one line
`RESULT {json}` (digests and tags, for the Rust test to check against the registry itself)
and then `OK`.
"""

import hashlib
import json
import os
import sys
from dataclasses import asdict

import oras.client
import oras.defaults
import oras.oci
import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
CONFIG_TYPE = "application/vnd.example.config.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"
SBOM_TYPE = "application/vnd.example.sbom.v1"


def fail(what):
    sys.exit(f"FAILED: {what}")


def check(cond, what):
    if not cond:
        fail(what)


def check_eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)
    return name


if len(sys.argv) != 3:
    sys.exit("usage: oras_client.py HOST:PORT WORKDIR")
host, workdir = sys.argv[1], sys.argv[2]
# oras-py only pushes files under the working directory.
os.chdir(workdir)

user, password = os.environ["BERTH_TEST_USER"], os.environ["BERTH_TEST_PASSWORD"]
client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
# `login()` goes through docker-py and breaks; set the credentials on the auth backend.
client.auth.set_basic_auth(user, password)
# Plain HTTP on loopback: no proxy, no CA bundle from the environment.
client.session.trust_env = False
http = requests.Session()
http.trust_env = False
http.auth = (user, password)

repo = f"{host}/oras/artifact"
base = f"http://{host}/v2/oras/artifact"


def get_manifest(reference):
    r = http.get(f"{base}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    check_eq(r.status_code, 200, f"GET manifest {reference}")
    check_eq(r.headers.get("Content-Type"), OCI_MANIFEST, f"Content-Type of manifest {reference}")
    return r.content


def referrers(digest, artifact_type=None):
    params = {"artifactType": artifact_type} if artifact_type else None
    r = http.get(f"{base}/referrers/{digest}", params=params)
    what = f"referrers of {digest}" + (f" ?artifactType={artifact_type}" if artifact_type else "")
    check_eq(r.status_code, 200, f"{what}: status ({r.text})")
    check_eq(r.headers.get("Content-Type"), OCI_INDEX, f"{what}: Content-Type")
    index = r.json()
    check_eq(index.get("schemaVersion"), 2, f"{what}: schemaVersion")
    check_eq(index.get("mediaType"), OCI_INDEX, f"{what}: mediaType")
    check(isinstance(index.get("manifests"), list), f"{what}: no manifests list in {index}")
    return r, index["manifests"]


# --- Push an artifact: two files with media types, a typed config, annotations. ---------
files = {
    "readme.txt": b"hello from the oras test\n",
    "data.bin": os.urandom(3 * 1024 * 1024 + 7),
}
write("readme.txt", files["readme.txt"])
write("data.bin", files["data.bin"])
config = b'{"tool":"berth-tests"}'
write("config.json", config)
r = client.push(
    target=f"{repo}:v1",
    files=["readme.txt:text/plain", "data.bin:application/vnd.example.data.v1"],
    manifest_config=f"config.json:{CONFIG_TYPE}",
    manifest_annotations={"org.opencontainers.image.description": "berth oras test"},
    quiet=True,
)
check_eq(r.status_code, 201, f"push v1 status ({r.text})")
v1 = r.headers.get("Docker-Content-Digest")
check(v1 and v1.startswith("sha256:"), f"push v1: Docker-Content-Digest {v1!r}")
check(r.headers.get("Location"), "push v1: no Location header")

v1_bytes = get_manifest("v1")
check_eq(sha256(v1_bytes), v1, "digest of the manifest served for v1")
check_eq(get_manifest(v1), v1_bytes, "manifest by digest vs by tag")
manifest = json.loads(v1_bytes)
check_eq(manifest["config"]["mediaType"], CONFIG_TYPE, "config media type")
check_eq(manifest["config"]["digest"], sha256(config), "config digest")
check_eq(
    [(l["mediaType"], l["annotations"]["org.opencontainers.image.title"], l["digest"]) for l in manifest["layers"]],
    [
        ("text/plain", "readme.txt", sha256(files["readme.txt"])),
        ("application/vnd.example.data.v1", "data.bin", sha256(files["data.bin"])),
    ],
    "layers",
)
check_eq(manifest["annotations"], {"org.opencontainers.image.description": "berth oras test"}, "manifest annotations")
blob = http.get(f"{base}/blobs/{sha256(config)}")
check_eq((blob.status_code, blob.content), (200, config), "config blob")

# --- A second artifact, uploaded in 1 MiB chunks (POST, PATCH x3, PUT). -----------------
os.mkdir("v2")
files_v2 = {"big.bin": os.urandom(2 * 1024 * 1024 + 512 * 1024 + 3)}
write("v2/big.bin", files_v2["big.bin"])
r = client.push(target=f"{repo}:v2", files=["v2/big.bin"], do_chunked=True, chunk_size=1024 * 1024, quiet=True)
check_eq(r.status_code, 201, f"chunked push v2 status ({r.text})")
v2 = r.headers.get("Docker-Content-Digest")
check_eq(sha256(get_manifest("v2")), v2, "digest of the manifest served for v2")

# --- Pull both back: the same bytes. -----------------------------------------------------
for tag, want in (("v1", files), ("v2", files_v2)):
    out = os.path.join(workdir, f"pulled-{tag}")
    pulled = client.pull(target=f"{repo}:{tag}", outdir=out)
    got = {}
    for path in pulled:
        with open(path, "rb") as f:
            got[os.path.basename(path)] = f.read()
    check(got == want, f"pulled {tag}: files {sorted(got)} differ from pushed {sorted(want)}")

# --- Tags. --------------------------------------------------------------------------------
check_eq(client.get_tags(repo), ["v1", "v2"], "tags")
check_eq(client.get_tags(repo, N=1), ["v1"], "tags with n=1")

# --- No referrers yet: an empty index, not a 404. ----------------------------------------
_, found = referrers(v1)
check_eq(found, [], "referrers before any were pushed")

subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=v1, size=len(v1_bytes))

# --- Referrer 1: a signature, artifactType over the empty config, pushed by digest. -------
container = client.get_container(f"{repo}:unused")
payload = json.dumps({"critical": {"image": {"docker-manifest-digest": v1}}, "optional": {"signer": "test"}}).encode()
write("signature.json", payload)
sig_layer = oras.oci.NewLayer("signature.json", media_type="application/vnd.example.signature.payload.v1+json")
check_eq(client.upload_blob("signature.json", container, sig_layer).status_code, 201, "upload signature payload")
write("empty.json", b"{}")
empty = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2, "data": "e30="}
# (v2's push already stored `{}` as its default config: oras-py then skips the upload, 200.)
check(client.upload_blob("empty.json", container, empty).status_code in (200, 201), "upload the empty config")
sig_annotations = {"org.example.signer": "oras-test", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
sig_manifest = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "artifactType": SIGNATURE_TYPE,
    "config": empty,
    "layers": [sig_layer],
    "subject": asdict(subject),
    "annotations": sig_annotations,
}
# upload_manifest sends requests' `json=` encoding of the dict: json.dumps with defaults.
sig_bytes = json.dumps(sig_manifest, allow_nan=False).encode()
sig = sha256(sig_bytes)
r = client.upload_manifest(sig_manifest, client.get_container(f"{repo}@{sig}"))
check_eq(r.status_code, 201, f"PUT signature manifest by digest ({r.text})")
check_eq(r.headers.get("Docker-Content-Digest"), sig, "signature: Docker-Content-Digest")
check_eq(r.headers.get("OCI-Subject"), v1, "signature: OCI-Subject header")
check_eq(get_manifest(sig), sig_bytes, "signature manifest as served")

# --- Referrer 2: an SBOM via push(subject=...); its artifact type is the config's type. ---
sbom = json.dumps({"spdxVersion": "SPDX-2.3", "name": "berth-test"}).encode()
write("sbom.spdx.json", sbom)
write("sbom-config.json", b"{}")
r = client.push(
    target=f"{repo}:sbom",
    files=["sbom.spdx.json:application/spdx+json"],
    subject=subject,
    manifest_config=f"sbom-config.json:{SBOM_TYPE}",
    manifest_annotations={"org.example.kind": "sbom"},
    quiet=True,
)
check_eq(r.status_code, 201, f"push SBOM ({r.text})")
sbom_digest = r.headers.get("Docker-Content-Digest")
check_eq(r.headers.get("OCI-Subject"), v1, "SBOM: OCI-Subject header")
sbom_bytes = get_manifest("sbom")
check_eq(sha256(sbom_bytes), sbom_digest, "SBOM manifest digest")

# --- Discover both through the referrers API. --------------------------------------------
r, found = referrers(v1)
check(r.headers.get("OCI-Filters-Applied") is None, f"unfiltered: OCI-Filters-Applied {r.headers.get('OCI-Filters-Applied')!r}")
by_digest = {d["digest"]: d for d in found}
check_eq(sorted(by_digest), sorted([sig, sbom_digest]), "referrers of v1")
check_eq(
    by_digest[sig],
    {"mediaType": OCI_MANIFEST, "digest": sig, "size": len(sig_bytes), "artifactType": SIGNATURE_TYPE, "annotations": sig_annotations},
    "signature descriptor",
)
check_eq(
    by_digest[sbom_digest],
    {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": len(sbom_bytes), "artifactType": SBOM_TYPE, "annotations": {"org.example.kind": "sbom"}},
    "SBOM descriptor",
)

for artifact_type, want in ((SIGNATURE_TYPE, [sig]), (SBOM_TYPE, [sbom_digest]), ("application/vnd.example.unknown", [])):
    r, found = referrers(v1, artifact_type)
    check_eq(r.headers.get("OCI-Filters-Applied"), "artifactType", f"?artifactType={artifact_type}: OCI-Filters-Applied")
    check_eq([d["digest"] for d in found], want, f"?artifactType={artifact_type}")
    check(all(d["artifactType"] == artifact_type for d in found), f"?artifactType={artifact_type}: {found}")

# The referrer itself pulls like any artifact.
pulled = client.pull(target=f"{repo}@{sig}", outdir=os.path.join(workdir, "pulled-signature"))
check_eq([open(p, "rb").read() for p in pulled], [payload], "pulled signature payload")

# Other manifests have no referrers; nor has a digest the registry never saw.
_, found = referrers(v2)
check_eq(found, [], "referrers of v2")
_, found = referrers("sha256:" + "0" * 64)
check_eq(found, [], "referrers of an unknown digest")

# --- Deleting the signature removes it from the list. -------------------------------------
r = http.delete(f"{base}/manifests/{sig}")
check_eq(r.status_code, 202, f"DELETE signature ({r.text})")
_, found = referrers(v1)
check_eq([d["digest"] for d in found], [sbom_digest], "referrers after deleting the signature")

print("RESULT " + json.dumps({"v1": v1, "v2": v2, "signature": sig, "sbom": sbom_digest, "tags": client.get_tags(repo)}))
print("OK")
