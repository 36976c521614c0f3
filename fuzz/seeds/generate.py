#!/usr/bin/env python3
"""Writes the committed fuzz seeds (fuzz/seeds/<target>/<name>) from the realistic inputs below:
the Azure tutorial configuration, one configuration of each source kind, the malformed payload
kinds of tests/tests/malformed_payloads.rs and the flag values of the azcli tests. Rerun after
changing it: `python3 fuzz/seeds/generate.py`. Regression inputs found by fuzzing are added by
hand (as crash-<what>) and are not touched by this script."""
import base64, copy, json, os

HERE = os.path.dirname(os.path.abspath(__file__))

def b64(s):
    return base64.b64encode(s.encode()).decode()

SSH_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
           "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
CA = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
KNOWN_HOSTS = "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"

TUTORIAL = {
    "scope": "cluster", "namespace": "cluster-config", "sourceKind": "GitRepository",
    "suspend": False,
    "gitRepository": {
        "url": "https://github.com/Azure/gitops-flux2-kustomize-helm-mt",
        "repositoryRef": {"branch": "main"}, "syncIntervalInSeconds": 600, "timeoutInSeconds": 600,
    },
    "kustomizations": {
        "infra": {"path": "./infrastructure", "prune": True},
        "apps": {"path": "./apps/staging", "prune": True, "dependsOn": ["infra"]},
    },
}
SIMPLE = {
    "scope": "cluster", "namespace": "flux-system", "sourceKind": "GitRepository",
    "gitRepository": {"url": "https://github.com/org/repo", "repositoryRef": {"branch": "main"},
                      "syncIntervalInSeconds": 600},
    "kustomizations": {"infra": {"path": "./infrastructure", "prune": True, "retryIntervalInSeconds": 2}},
}

# (name, properties with configurationProtectedSettings in base64, as the data plane sends them)
GOOD = [
    ("cluster-config", TUTORIAL),
    ("git-ssh", {**SIMPLE, "gitRepository": {"url": "ssh://git@github.com/org/repo",
                 "repositoryRef": {"tag": "v1.0.0"}, "sshKnownHosts": b64(KNOWN_HOSTS)},
                 "configurationProtectedSettings": {"sshPrivateKey": b64(SSH_KEY)}}),
    ("git-generated-key", {**SIMPLE, "gitRepository": {"url": "ssh://git@github.com/org/repo",
                           "repositoryRef": {"semver": ">=1.0.0"}}}),
    ("git-https", {**SIMPLE, "scope": "namespace", "namespace": "team-a",
                   "gitRepository": {"url": "https://dev.azure.com/org/p/_git/r", "httpsUser": "git",
                                     "httpsCACert": b64(CA), "repositoryRef": {"commit": "0123456789abcdef0123456789abcdef01234567"}},
                   "configurationProtectedSettings": {"httpsKey": b64("pat-value")}}),
    ("git-azure", {"gitRepository": {"url": "https://dev.azure.com/org/p/_git/r",
                   "repositoryRef": {"branch": "main"}, "provider": "Azure"}, "kustomizations": {"k": {}}}),
    ("bucket", {"sourceKind": "Bucket", "bucket": {"url": "http://minio.minio:9000", "bucketName": "flux",
                "accessKey": "ak", "insecure": True, "syncIntervalInSeconds": 60},
                "kustomizations": {"apps": {"path": "./apps", "postBuild": {"substitute": {"region": "eu"},
                    "substituteFrom": [{"kind": "ConfigMap", "name": "vars", "optional": True}]}}},
                "configurationProtectedSettings": {"bucketSecretKey": b64("sk")}}),
    ("azure-blob", {"sourceKind": "AzureBlob", "azureBlob": {"url": "https://account.blob.core.windows.net",
                    "containerName": "manifests", "servicePrincipal": {"clientId": "00000000-0000-0000-0000-000000000001",
                    "tenantId": "00000000-0000-0000-0000-000000000002"}},
                    "kustomizations": {"apps": {"timeoutInSeconds": 300, "force": True, "wait": True}},
                    "configurationProtectedSettings": {"clientSecret": b64("s3cr3t")}}),
    ("azure-blob-sas", {"sourceKind": "AzureBlob", "azureBlob": {"url": "https://acct.blob.core.windows.net",
                        "containerName": "flux", "timeoutInSeconds": 3600}, "kustomizations": {"k": {}},
                        "configurationProtectedSettings": {"sasToken": b64("sv=2020&sig=x")}}),
    ("oci", {"sourceKind": "OCIRepository", "waitForReconciliation": True, "reconciliationWaitDuration": "PT10M",
             "ociRepository": {"url": "oci://ghcr.io/org/manifests", "repositoryRef": {"tag": "v1.2.3"},
                "layerSelector": {"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip", "operation": "extract"},
                "verify": {"provider": "cosign", "matchOidcIdentity": [{"issuer": "^https://token.actions.githubusercontent.com$",
                           "subject": "^https://github.com/org/.*$"}]},
                "tlsConfig": {"caCertificate": b64(CA)}},
             "kustomizations": {"apps": {"path": "./deploy"}}}),
]

def set_path(v, path, value):
    parts = path.strip("/").split("/")
    for p in parts[:-1]:
        v = v.setdefault(p, {})
    v[parts[-1]] = value

def without(v, path):
    v = copy.deepcopy(v)
    parts = path.strip("/").split("/")
    t = v
    for p in parts[:-1]:
        t = t[p]
    del t[parts[-1]]
    return v

MALFORMED = [  # the kinds of tests/tests/malformed_payloads.rs
    ("prune-yes", "/kustomizations/infra/prune", "yes"),
    ("interval-string", "/gitRepository/syncIntervalInSeconds", "10"),
    ("interval-negative", "/gitRepository/syncIntervalInSeconds", -5),
    ("interval-float", "/gitRepository/syncIntervalInSeconds", 1.5),
    ("interval-huge", "/gitRepository/syncIntervalInSeconds", 1e20),
    ("source-kind-helm", "/sourceKind", "Helm"),
    ("scope-global", "/scope", "global"),
    ("url-file-scheme", "/gitRepository/url", "file:///etc/passwd"),
    ("source-bad-json", "/gitRepository", "{\"url\": \"https://x"),
    ("kustomizations-array", "/kustomizations", ["infra"]),
    ("path-traversal", "/kustomizations/infra/path", "../../etc"),
    ("path-nul", "/kustomizations/infra/path", "./a\u0000b"),
    ("kustomization-name-hostile", "/kustomizations", {"../evil": {"path": "./infrastructure"}}),
    ("depends-on-missing", "/kustomizations/infra/dependsOn", ["nope"]),
    ("depends-on-cycle", "/kustomizations", {"a": {"dependsOn": ["b"]}, "b": {"dependsOn": ["a"]}}),
    ("timeout-string", "/kustomizations/infra/timeoutInSeconds", "abc"),
    ("suspend-string", "/suspend", "true"),
    ("namespace-number", "/namespace", 5),
    ("namespace-hostile", "/namespace", "kube-system/../x"),
    ("https-with-ssh-key", "/configurationProtectedSettings",
     {"sshPrivateKey": b64("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")}),
    ("protected-bad-base64", "/configurationProtectedSettings", {"httpsUser": "!!not base64!!", "httpsKey": b64("k")}),
    ("protected-number", "/configurationProtectedSettings", {"httpsKey": 12}),
    ("protected-key-traversal", "/configurationProtectedSettings", {"../x": b64("v")}),
    ("wait-duration-years", "/reconciliationWaitDuration", "P1Y"),
]

def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def compact(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)

def listing(items, count=None):
    return compact({"value": items, "count": len(items) if count is None else count})

def plain_protected(props):
    """The FluxConfig document the controller sees: protected settings decoded, in their own key."""
    props = copy.deepcopy(props)
    protected = props.pop("configurationProtectedSettings", {})
    decoded = {}
    for k, v in protected.items():
        try:
            decoded[k] = base64.b64decode(v).decode() if isinstance(v, str) else v
        except Exception:
            decoded[k] = v
    return props, decoded

# dataplane_listing
for name, props in GOOD:
    write("dataplane_listing", f"good-{name}", listing([{"name": name, "properties": props}]))
write("dataplane_listing", "all-good", listing([{"name": n, "properties": p} for n, p in GOOD]))
write("dataplane_listing", "empty", listing([]))
write("dataplane_listing", "partial", listing([{"name": "a", "properties": SIMPLE}], count=2))
mixed = [{"name": "good", "properties": SIMPLE}]
for name, path, value in MALFORMED:
    props = copy.deepcopy(SIMPLE)
    set_path(props, path, value)
    item = {"name": name, "properties": props}
    write("dataplane_listing", f"bad-{name}", listing([{"name": "good", "properties": SIMPLE}, item]))
    mixed.append(item)
write("dataplane_listing", "malformed-payloads", listing(mixed))
write("dataplane_listing", "bad-url-missing", listing([{"name": "url-missing", "properties": without(SIMPLE, "/gitRepository/url")}]))
for i, bad_name in enumerate(["name-UPPER", "a" * 300, "café-ü", "../etc", "x/../good", "", 5]):
    write("dataplane_listing", f"bad-name-{i}", listing([{"name": "good", "properties": SIMPLE},
                                                       {"name": bad_name, "properties": SIMPLE}]))
write("dataplane_listing", "no-name", listing([{"name": "good", "properties": SIMPLE}, {"properties": {}}]))
write("dataplane_listing", "duplicates", listing([{"name": "a", "properties": SIMPLE},
                                                 {"name": "a", "properties": {**SIMPLE, "namespace": "other"}}]))
# Raw texts the management API could not store (spliced into listings in the test).
inner = compact(SIMPLE)[1:-1]
write("dataplane_listing", "raw-dup-keys", '{"value":[{"name":"dup-keys","properties":{%s,"scope":"global"}}],"count":1}' % inner)
write("dataplane_listing", "raw-properties-string", '{"value":[{"name":"properties-string","properties":"{\\"scope\\":"}],"count":1}')
write("dataplane_listing", "raw-properties-missing", '{"value":[{"name":"properties-missing"}],"count":1}')
write("dataplane_listing", "raw-item-not-object", '{"value":[5,"x",null,[]],"count":4}')

# fluxconfig_spec: {"metadata": {...}, "spec": {...}, "protectedSettings": {...}}
for name, props in GOOD:
    spec, protected = plain_protected(props)
    ns = spec.get("namespace") or "default"
    write("fluxconfig_spec", f"good-{name}", compact({"metadata": {"name": name, "namespace": ns},
                                                      "spec": spec, "protectedSettings": protected}))
for name, path, value in MALFORMED:
    props = copy.deepcopy(SIMPLE)
    set_path(props, path, value)
    spec, protected = plain_protected(props)
    write("fluxconfig_spec", f"bad-{name}", compact({"metadata": {"name": "c", "namespace": "flux-system"},
                                                     "spec": spec, "protectedSettings": protected}))
write("fluxconfig_spec", "long-names", compact({"metadata": {"name": "c" * 40, "namespace": "n" * 63},
      "spec": {**TUTORIAL, "namespace": "n" * 63, "kustomizations": {"k" * 22: {}}}}))
write("fluxconfig_spec", "spec-only", compact(TUTORIAL))

# kustomization_flag: one flag word per line
FLAGS = [
    'name=infra\npath=./infrastructure\nprune=true',
    'name=apps\npath=./apps/staging\nprune=true\ndependsOn=["infra"]',
    'name=a\ndependsOn=[infra]', 'name=a\ndepends_on=["x","y"]', "name=a\ndepends-on=['x',y]",
    'name=a\ndependencies=x,y', 'name=a\ndependsOn=[]', 'name=a\ndependsOn=[x]\ndepends_on=[y]',
    'name=A', 'name=-a', 'name=a..b', 'name=apps.v2',
    'name=a\nsync_interval=10m\nretry_interval=1h30m\ntimeout=45s',
    'name=a\nsyncInterval=1h\nsync-interval=2m', 'name=a\ninterval=1h\nretryInterval=5m\nretry-interval=6m',
    'name=a\nprune=True\nforce=false\nwait=no', 'name=a\nforce=yes\nwait=on\nprune=off',
    'name=a\npostBuild={"substitute":{"region":"eu"}}',
    'name=a\npost_build={"substituteFrom":[{"kind":"ConfigMap","name":"vars","optional":true}]}',
    'name=a\npath=../../etc\ndependsOn=[a]', 'path=./x', 'name=', 'name=a\nprune', 'name=a\nprune=maybe',
    'name=a\nsync_interval=600', 'name=a\ntimeout=10x', 'name=a\ntimeout=m', 'name=a\ntimeout=1m1h',
    'name=a\ntimeout=', 'name=a\ndependsOn=[a', 'name=a\ndependsOn=a,,b', 'name=a\npostBuild={',
    'name=a\ncolor=blue', 'name=a\ntimeout=99999999999999999999h', 'name=a\npath=./x=y', 'name=' + 'a' * 64,
]
for i, flag in enumerate(FLAGS):
    write("kustomization_flag", f"flag-{i:02}", flag)
