"""Checks that rendered manifests and the services agree.

usage: check_manifests.py BINARIES_DIR RENDERED.yaml [RENDERED.yaml ...]
       check_manifests.py --self-test BINARIES_DIR RENDERED.yaml
         (breaks the rendered manifests in each way below, one at a time,
         and fails unless every break is reported)

For each of the four services' Deployments:
  - every environment variable the manifest sets (env, envFrom ConfigMaps and
    Secrets) is one the service reads (its `--help` lists them; LOG_FORMAT and
    RUST_LOG are read by common::telemetry), and every one the cluster needs
    is set (their defaults point at 127.0.0.1);
  - the container port is the one the service listens on, and the probes use
    /readyz (readiness) and /healthz (liveness) on a declared port;
  - a `*_FILE` variable names a file a mounted Secret volume holds;
  - terminationGracePeriodSeconds is above the service's own shutdown grace;
  - every URL it is given names a Service of the manifests on its port (when
    the manifests hold that Service), and a NetworkPolicy lets the pod in;
  - the Ingress's body-size limit equals the gateway's MAX_UPLOAD_BYTES.
Prints every problem and exits 1 when there is one.
"""
import base64
import pathlib
import re
import subprocess
import sys
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

# image -> (binary, the variables a cluster must set, seconds of shutdown
# grace the service takes after SIGTERM, and where that figure lives).
SERVICES = {
    "gateway-service": (
        "gateway",
        {"AUTH_URL", "MONGODB_URI", "AMQP_URL", "MAX_UPLOAD_BYTES", "SHUTDOWN_GRACE_SECS"},
        None,  # SHUTDOWN_GRACE_SECS itself, plus common::server's background wait
        None,
    ),
    "auth-service": (
        "auth-service",
        {"DATABASE_URL", "JWT_TTL", "TRUSTED_PROXIES"},
        20,
        ("services/auth/src/lib.rs", r"SHUTDOWN_GRACE: Duration = Duration::from_secs\((\d+)\)"),
    ),
    "convert-service": (
        "converter",
        {"MONGODB_URI", "AMQP_URL", "CONVERTER_CONCURRENCY"},
        60,
        ("services/converter/src/lib.rs", r"grace: Duration::from_secs\((\d+)\)"),
    ),
    "notification-service": (
        "notification",
        {"AMQP_URL", "MONGODB_URI", "SMTP_URL", "MAIL_FROM", "PUBLIC_URL"},
        30,
        ("services/notification/src/lib.rs", r"grace: Duration::from_secs\((\d+)\)"),
    ),
}
# One of these signs the tokens in a cluster (without, auth makes a throw-away key).
AUTH_KEYS = {"JWT_PRIVATE_KEY_FILE", "JWT_PRIVATE_KEY", "JWT_SECRET"}
# Read by common::telemetry::init in every service.
TELEMETRY = {"LOG_FORMAT", "RUST_LOG"}
# common::server waits this long for background work after the grace.
BACKGROUND_WAIT = ("services/common/src/server.rs", r"BACKGROUND_WAIT: Duration = Duration::from_secs\((\d+)\)")
URL_VARIABLES = {"AUTH_URL": 80, "AMQP_URL": 5672, "MONGODB_URI": 27017, "DATABASE_URL": 5432, "SMTP_URL": 25}


def source_number(where) -> int:
    path, pattern = where
    match = re.search(pattern, (ROOT / path).read_text())
    if not match:
        raise SystemExit(f"check_manifests: {path} no longer matches {pattern!r}: update this check")
    return int(match.group(1))


def help_of(binary: pathlib.Path) -> tuple[set, int]:
    """The variables a binary reads and its default listen port, from --help."""
    text = subprocess.run([str(binary), "--help"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)[]=]", text))
    port = re.search(r"\[env: LISTEN_ADDR=\]\s*\[default: [^:\]]+:(\d+)\]", text)
    return names | TELEMETRY, int(port.group(1)) if port else 0


class Checker:
    def __init__(self, path: str, docs: list, binaries: pathlib.Path):
        self.path = path
        self.binaries = binaries
        self.problems: list[str] = []
        self.docs = docs
        self.kind = lambda k: [d for d in docs if d["kind"] == k]
        self.configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in self.kind("ConfigMap")}
        self.secrets = {
            d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
            for d in self.kind("Secret")
        }

    def problem(self, what: str) -> None:
        self.problems.append(f"{self.path}: {what}")

    def environment(self, container: dict) -> dict:
        env = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            table = self.configmaps if "configMapRef" in source else self.secrets
            if ref["name"] not in table:
                self.problem(f"envFrom names {ref['name']}, which is not in the manifests")
            env.update(table.get(ref["name"], {}))
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", "<from a reference>")
        return env

    def check_deployment(self, deployment: dict) -> None:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        image = container["image"].split("/")[-1].split(":")[0]
        binary, required, grace, where = SERVICES[image]
        reads, default_port = help_of(self.binaries / binary)
        env = self.environment(container)
        for variable in sorted(set(env) - reads):
            self.problem(f"{name}: sets {variable}, which {binary} does not read")
        for variable in sorted(required - set(env)):
            self.problem(f"{name}: does not set {variable} (its default is for one machine)")
        if image == "auth-service" and not AUTH_KEYS & set(env):
            self.problem(f"{name}: sets no signing key ({' or '.join(sorted(AUTH_KEYS))})")
        port = default_port
        if "LISTEN_ADDR" in env:
            port = int(env["LISTEN_ADDR"].rsplit(":", 1)[1])
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if port not in ports.values():
            self.problem(f"{name}: {binary} listens on {port}, the container declares {sorted(ports.values())}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container.get(probe, {}).get("httpGet")
            if not get:
                self.problem(f"{name}: no httpGet {probe}")
                continue
            probe_port = ports.get(get["port"], get["port"])
            if get.get("path") != path or probe_port != port:
                self.problem(f"{name}: {probe} asks {get.get('path')} on {get['port']}, the service answers {path} on {port}")
        self.check_files(name, spec, container, env)
        if grace is None:
            grace = int(env.get("SHUTDOWN_GRACE_SECS", 30)) + source_number(BACKGROUND_WAIT)
        elif source_number(where) != grace:
            self.problem(f"{name}: the shutdown grace in {where[0]} changed: update this check and the manifest")
        if spec.get("terminationGracePeriodSeconds", 30) <= grace:
            self.problem(f"{name}: terminationGracePeriodSeconds {spec.get('terminationGracePeriodSeconds', 30)} is not above its {grace} s shutdown")
        self.check_urls(name, deployment, env)

    def check_files(self, name: str, spec: dict, container: dict, env: dict) -> None:
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for variable, value in env.items():
            if not variable.endswith("_FILE"):
                continue
            path = pathlib.PurePosixPath(value)
            mount = next((m for m in container.get("volumeMounts", []) if pathlib.PurePosixPath(m["mountPath"]) == path.parent), None)
            secret = volumes.get(mount["name"], {}).get("secret") if mount else None
            if not secret:
                self.problem(f"{name}: {variable}={value} is in no mounted Secret volume")
                continue
            items = [i["path"] for i in secret.get("items", [])] or list(self.secrets.get(secret["secretName"], {}))
            if path.name not in items:
                self.problem(f"{name}: {variable}={value}: the Secret volume holds {items}")

    def check_urls(self, name: str, deployment: dict, env: dict) -> None:
        services = {s["metadata"]["name"]: s for s in self.kind("Service")}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for variable, default_port in URL_VARIABLES.items():
            if variable not in env:
                continue
            url = urllib.parse.urlsplit(env[variable])
            host, port = url.hostname or "", url.port or default_port
            service = services.get(host.split(".")[0])
            if service is None:
                if "." not in host:
                    self.problem(f"{name}: {variable} names {host}, which is no Service of the manifests")
                continue  # an external server (production)
            if port not in [p["port"] for p in service["spec"]["ports"]]:
                self.problem(f"{name}: {variable} uses port {port}, Service {host} offers {[p['port'] for p in service['spec']['ports']]}")
            if not self.policy_allows(service, labels, port):
                self.problem(f"{name}: no NetworkPolicy lets it reach {host}:{port} ({variable})")

    def policy_allows(self, service: dict, client_labels: dict, port: int) -> bool:
        policies = self.kind("NetworkPolicy")
        if not policies:
            return True
        selector = service["spec"]["selector"]
        for policy in policies:
            target = policy["spec"].get("podSelector", {}).get("matchLabels", {})
            if not all(selector.get(k) == v for k, v in target.items()) or not target:
                continue
            for rule in policy["spec"].get("ingress", []):
                ports = [p.get("port") for p in rule.get("ports", [])]
                sources = [s.get("podSelector", {}).get("matchLabels") for s in rule.get("from", [])]
                if (not ports or port in ports) and any(
                    s is not None and all(client_labels.get(k) == v for k, v in s.items()) for s in sources
                ):
                    return True
        return False

    def check_ingress(self) -> None:
        gateway = next((d for d in self.kind("Deployment") if d["metadata"]["name"] == "gateway"), None)
        for ingress in self.kind("Ingress"):
            limit = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/proxy-body-size", "")
            match = re.fullmatch(r"(\d+)([kmg]?)", limit.lower())
            if not match or gateway is None:
                self.problem("the Ingress has no proxy-body-size, or there is no gateway")
                continue
            size = int(match.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2)]
            env = self.environment(gateway["spec"]["template"]["spec"]["containers"][0])
            if size != int(env.get("MAX_UPLOAD_BYTES", 0)):
                self.problem(f"the Ingress's proxy-body-size ({limit}) is not MAX_UPLOAD_BYTES ({env.get('MAX_UPLOAD_BYTES')})")

    def run(self) -> list[str]:
        deployments = [d for d in self.kind("Deployment") if d["spec"]["template"]["spec"]["containers"][0]["image"].split("/")[-1].split(":")[0] in SERVICES]
        if len(deployments) != len(SERVICES):
            self.problem(f"expected the {len(SERVICES)} services' Deployments, found {[d['metadata']['name'] for d in deployments]}")
        for deployment in deployments:
            self.check_deployment(deployment)
        self.check_ingress()
        return self.problems


def load(path: str) -> list:
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]


def find(docs: list, kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name))


def container(docs: list, name: str) -> dict:
    return find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def secret_set(docs: list, name: str, key: str, value) -> None:
    data = find(docs, "Secret", name)["data"]
    if value is None:
        data.pop(key)
    else:
        data[key] = base64.b64encode(value.encode()).decode()


# Each break of a correct render, and the words the report must contain.
BREAKS = [
    ("a variable nobody reads", lambda d: find(d, "ConfigMap", "gateway")["data"].update(AMQP_URI="x"), "AMQP_URI, which gateway does not read"),
    ("a required variable missing", lambda d: secret_set(d, "converter", "MONGODB_URI", None), "does not set MONGODB_URI"),
    ("a wrong readiness path", lambda d: container(d, "gateway")["readinessProbe"]["httpGet"].update(path="/ready"), "readinessProbe asks /ready"),
    ("a wrong container port", lambda d: container(d, "converter")["ports"][0].update(containerPort=8091), "converter listens on 8090"),
    ("a key file not mounted", lambda d: find(d, "ConfigMap", "auth")["data"].update(JWT_PRIVATE_KEY_FILE="/var/run/key.pem"), "is in no mounted Secret volume"),
    ("a grace period too short", lambda d: find(d, "Deployment", "notification")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=20), "is not above its 30 s shutdown"),
    ("a Service name misspelt", lambda d: find(d, "ConfigMap", "gateway")["data"].update(AUTH_URL="http://auths:5000"), "names auths, which is no Service"),
    ("a wrong Service port", lambda d: secret_set(d, "gateway", "AMQP_URL", "amqp://u:p@rabbitmq:5673/%2f"), "uses port 5673"),
    ("a network policy missing", lambda d: d.remove(find(d, "NetworkPolicy", "mongodb")), "no NetworkPolicy lets it reach mongodb"),
    ("an Ingress body limit too small", lambda d: find(d, "Ingress", "gateway")["metadata"]["annotations"].update({"nginx.ingress.kubernetes.io/proxy-body-size": "1m"}), "proxy-body-size (1m)"),
]


def self_test(binaries: pathlib.Path, path: str) -> None:
    clean = Checker(path, load(path), binaries).run()
    if clean:
        sys.exit(f"self-test: the unbroken manifests already fail: {clean}")
    missed = []
    for what, breaks, expected in BREAKS:
        docs = load(path)
        breaks(docs)
        report = Checker(path, docs, binaries).run()
        if not any(expected in problem for problem in report):
            missed.append(f"{what}: expected {expected!r}, got {report}")
    for miss in missed:
        print(f"self-test: not caught: {miss}", file=sys.stderr)
    if missed:
        sys.exit(1)
    print(f"manifest check self-test: all {len(BREAKS)} breaks caught")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--self-test":
        return self_test(pathlib.Path(sys.argv[2]), sys.argv[3])
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binaries = pathlib.Path(sys.argv[1])
    problems = [p for path in sys.argv[2:] for p in Checker(path, load(path), binaries).run()]
    for problem in problems:
        print(f"manifest check: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"manifest check: {len(sys.argv) - 2} rendered overlays agree with the services")


if __name__ == "__main__":
    main()
