"""Checks that rendered manifests and the services agree.

usage: check_manifests.py BINARIES_DIR RENDERED.yaml [RENDERED.yaml ...]
       check_manifests.py --self-test BINARIES_DIR RENDERED.yaml KEDA_RENDERED.yaml
         (breaks the rendered manifests in each way below, one at a time,
         and fails unless every break is reported; the KEDA render is an
         overlay with components/keda)

The renders include the Secrets (the overlay plus scripts/k8s-secrets'
kustomization), so the variables the Secrets give are checked too.

For each of the four services' Deployments:
  - every environment variable the manifest sets (env, envFrom ConfigMaps and
    Secrets) is one the service reads (its `--help` lists them; LOG_FORMAT and
    RUST_LOG are read by common::telemetry), none is an empty string (the
    services refuse '' for a list or a number: leave it out instead), and
    every one the cluster needs is set (their defaults point at 127.0.0.1);
  - the container declares the port the service listens on and its ops port
    (the gateway's OPS_LISTEN_ADDR; the others serve /metrics on their one
    port), and the probes use /readyz (readiness) and /healthz (liveness) on
    the ops port;
  - a `*_FILE` variable names a file a mounted Secret volume holds;
  - terminationGracePeriodSeconds is above the preStop sleep plus the
    service's own shutdown grace (the gateway's and the converter's
    SHUTDOWN_GRACE_SECS, the gateway's plus common::server's background wait);
  - every URL it is given names a Service of the manifests on its port (when
    the manifests hold that Service);
  - its selector names the instance (app.kubernetes.io/instance) and its pods
    are part-of the application;
  - a Deployment an autoscaler targets (HorizontalPodAutoscaler or KEDA
    ScaledObject) sets no `replicas` (it would reset the autoscaler's count
    on every apply), has one autoscaler only, which scales down one pod at a
    time after a quiet window;
  - the converter requests CONVERTER_CONCURRENCY cores (one per conversion).
The network policies, as a graph of (source, pod, port) edges: every flow
the manifests need is allowed (each service to the Services its URLs name,
the ingress controller's namespace to the Ingress's backend port, the
monitoring namespace to every metrics port, KEDA's namespace to the broker
its trigger reads, DNS where an egress policy exists), and nothing else: no
rule without sources or ports, no empty selector, no port no container of
the selected pods declares, no edge nothing needs. The namespaces of the
ingress controller, Prometheus and KEDA are those the policies labelled
mp3converter.io/admits (ingress-controller, monitoring, keda) admit.
KEDA: the ScaledObject adopts the HPA a live cluster has (annotation
scaledobject.keda.sh/transfer-hpa-ownership and horizontalPodAutoscalerConfig
name), counts the messages in flight as well as those waiting (HTTP API,
excludeUnacknowledged false), one replica per CONVERTER_CONCURRENCY jobs at
most, and reads a Secret key whose host, reached from KEDA's namespace, is
fully qualified (<service>.<namespace>.svc[.cluster.local]).
Each ServiceMonitor scrapes /metrics on a metrics port (a service's ops
port, RabbitMQ's rabbitmq_prometheus port).
The Ingress: its body-size limit equals the gateway's MAX_UPLOAD_BYTES, its
backend is not an ops port and no path names /metrics, /healthz or /readyz.
Every namespaced object is in the overlay's namespace.
Prints every problem and exits 1 when there is one.
"""
import base64
import copy
import pathlib
import re
import subprocess
import sys
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]

# image -> (binary, the variables a cluster must set, the service's shutdown
# grace: a number of seconds and where the source says it, or the variable
# that sets it).
SERVICES = {
    "gateway-service": ("gateway", {"AUTH_URL", "MONGODB_URI", "AMQP_URL", "MAX_UPLOAD_BYTES", "SHUTDOWN_GRACE_SECS"}, "SHUTDOWN_GRACE_SECS"),
    "auth-service": ("auth-service", {"DATABASE_URL", "JWT_TTL", "TRUSTED_PROXIES"},
                     (20, "services/auth/src/lib.rs", r"SHUTDOWN_GRACE: Duration = Duration::from_secs\((\d+)\)")),
    "convert-service": ("converter", {"MONGODB_URI", "AMQP_URL", "CONVERTER_CONCURRENCY", "SHUTDOWN_GRACE_SECS"}, "SHUTDOWN_GRACE_SECS"),
    "notification-service": ("notification", {"AMQP_URL", "MONGODB_URI", "SMTP_URL", "MAIL_FROM", "PUBLIC_URL"},
                             (30, "services/notification/src/lib.rs", r"grace: Duration::from_secs\((\d+)\)")),
}
# One of these signs the tokens in a cluster (without, auth makes a throw-away key).
AUTH_KEYS = {"JWT_PRIVATE_KEY_FILE", "JWT_PRIVATE_KEY", "JWT_SECRET"}
# Read by common::telemetry::init in every service.
TELEMETRY = {"LOG_FORMAT", "RUST_LOG"}
# common::server waits this long for background work after the gateway's grace.
BACKGROUND_WAIT = ("services/common/src/server.rs", r"BACKGROUND_WAIT: Duration = Duration::from_secs\((\d+)\)")
URL_VARIABLES = {"AUTH_URL": 80, "AMQP_URL": 5672, "MONGODB_URI": 27017, "DATABASE_URL": 5432, "SMTP_URL": 25}
OPS_PATHS = ("/metrics", "/healthz", "/readyz")
INSTANCE, PART_OF = "app.kubernetes.io/instance", "app.kubernetes.io/part-of"
ADMITS = "mp3converter.io/admits"
TRANSFER = "scaledobject.keda.sh/transfer-hpa-ownership"
# RabbitMQ's rabbitmq_prometheus port, scraped by the monitoring namespace.
BROKER_METRICS_PORT = "prometheus"
NOTICES: set = set()


def source_number(where) -> int:
    path, pattern = where
    match = re.search(pattern, (ROOT / path).read_text())
    if not match:
        raise SystemExit(f"check_manifests: {path} no longer matches {pattern!r}: update this check")
    return int(match.group(1))


def help_of(binary: pathlib.Path) -> dict:
    """The variables a binary reads, each with its default ('' for none), from --help."""
    text = subprocess.run([str(binary), "--help"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True).stdout
    found = {}
    for match in re.finditer(r"\[env: ([A-Z0-9_]+)[]=][^\n\[]*(?:\s*\[default: ([^\]\n]*)\])?", text):
        found[match.group(1)] = (match.group(2) or "").strip('"')
    return {**{name: "" for name in TELEMETRY}, **found}


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1]) if address else 0


def cpu_cores(quantity) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def image_of(container: dict) -> str:
    return container["image"].split("/")[-1].split(":")[0].split("@")[0]


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against labels."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def url_of(text: str, default_port: int):
    url = urllib.parse.urlsplit(text)
    return url.hostname or "", url.port or {"http": 80, "https": 443}.get(url.scheme, default_port)


class Checker:
    def __init__(self, path: str, docs: list, binaries: pathlib.Path):
        self.path = path
        self.binaries = binaries
        self.problems: list = []
        self.docs = docs
        self.kind = lambda k: [d for d in docs if d["kind"] == k]
        self.configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in self.kind("ConfigMap")}
        self.secrets = {
            d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()}
            for d in self.kind("Secret")
        }
        self.namespace = next((d["metadata"]["name"] for d in self.kind("Namespace")), "default")
        self.services = {s["metadata"]["name"]: s for s in self.kind("Service")}
        self.workloads = self.kind("Deployment") + self.kind("StatefulSet")
        self.helps: dict = {}

    def problem(self, what: str) -> None:
        self.problems.append(f"{self.path}: {what}")

    # --- reading the manifests -------------------------------------------------

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

    def service_deployment(self, binary: str):
        return next((d for d in self.kind("Deployment") if SERVICES.get(image_of(d["spec"]["template"]["spec"]["containers"][0]), ("",))[0] == binary), None)

    def help(self, binary: str) -> dict:
        if binary not in self.helps:
            self.helps[binary] = help_of(self.binaries / binary)
        return self.helps[binary]

    def ports_of(self, binary: str, env: dict) -> tuple:
        """(the port the service listens on, the port serving /healthz, /readyz and /metrics)."""
        reads = self.help(binary)
        listen = port_of(env.get("LISTEN_ADDR") or reads.get("LISTEN_ADDR", ""))
        ops = port_of(env.get("OPS_LISTEN_ADDR") or reads["OPS_LISTEN_ADDR"]) if "OPS_LISTEN_ADDR" in reads else listen
        return listen, ops

    def container_port(self, workload: dict, port) -> int:
        """A port of the workload's containers, by number or name (0: not declared)."""
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for declared in container.get("ports", []):
                if port in (declared["containerPort"], declared.get("name")):
                    return declared["containerPort"]
        return 0

    def service_target(self, service: dict, port: int):
        """The workload behind a Service and the container port its `port` reaches."""
        spec = service["spec"]
        entry = next((p for p in spec["ports"] if p["port"] == port or p.get("name") == port), None)
        workload = next((w for w in self.workloads if selects({"matchLabels": spec.get("selector", {})}, w["spec"]["template"]["metadata"].get("labels", {})) and spec.get("selector")), None)
        if entry is None or workload is None:
            return workload, 0
        return workload, self.container_port(workload, entry.get("targetPort", entry["port"]))

    def autoscalers(self) -> dict:
        """Deployment name -> the autoscalers that target it."""
        found: dict = {}
        for hpa in self.kind("HorizontalPodAutoscaler"):
            found.setdefault(hpa["spec"]["scaleTargetRef"]["name"], []).append(hpa)
        for scaled in self.kind("ScaledObject"):
            if scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment":
                found.setdefault(scaled["spec"]["scaleTargetRef"]["name"], []).append(scaled)
        return found

    # --- each service ---------------------------------------------------------------

    def check_deployment(self, deployment: dict) -> None:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        binary, required, grace = SERVICES[image_of(container)]
        reads = self.help(binary)
        env = self.environment(container)
        for variable in sorted(set(env) - set(reads)):
            self.problem(f"{name}: sets {variable}, which {binary} does not read")
        for variable in sorted(v for v, value in env.items() if value == ""):
            self.problem(f"{name}: sets {variable} to an empty string, which {binary} refuses: leave it out for the default")
        for variable in sorted(required - set(env)):
            self.problem(f"{name}: does not set {variable} (its default is for one machine)")
        if binary == "auth-service" and not AUTH_KEYS & set(env):
            self.problem(f"{name}: sets no signing key ({' or '.join(sorted(AUTH_KEYS))})")
        listen, ops = self.ports_of(binary, env)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        for what, port in (("listens on", listen), ("serves /metrics, /healthz and /readyz on", ops)):
            if port not in ports.values():
                self.problem(f"{name}: {binary} {what} {port}, the container declares {sorted(ports.values())}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container.get(probe, {}).get("httpGet")
            if not get:
                self.problem(f"{name}: no httpGet {probe}")
                continue
            probe_port = ports.get(get["port"], get["port"])
            if get.get("path") != path or probe_port != ops:
                self.problem(f"{name}: {probe} asks {get.get('path')} on {get['port']}, the service answers {path} on {ops}")
        self.check_files(name, spec, container, env)
        if isinstance(grace, str):
            seconds = int(env.get(grace) or reads.get(grace) or 30)
            if binary == "gateway":
                seconds += source_number(BACKGROUND_WAIT)
        else:
            seconds, *where = grace
            if source_number(where) != seconds:
                self.problem(f"{name}: the shutdown grace in {where[0]} changed: update this check and the manifest")
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        if "sleep" in pre_stop:
            seconds += int(pre_stop["sleep"]["seconds"])
        elif "exec" in pre_stop and pre_stop["exec"]["command"][:1] in (["sleep"], ["/bin/sleep"]):
            seconds += int(pre_stop["exec"]["command"][1])
        termination = spec.get("terminationGracePeriodSeconds", 30)
        if termination <= seconds:
            self.problem(f"{name}: terminationGracePeriodSeconds {termination} is not above its {seconds} s shutdown (preStop included)")
        if binary == "converter":
            concurrency = env.get("CONVERTER_CONCURRENCY", "")
            request = container.get("resources", {}).get("requests", {}).get("cpu")
            if not concurrency.isdigit() or request is None or abs(cpu_cores(request) - int(concurrency)) > 1e-9:
                self.problem(f"{name}: requests {request} CPU for CONVERTER_CONCURRENCY={concurrency or 'unset'} conversions at once: one conversion keeps one core busy, request that many cores")
        self.check_urls(name, env)

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

    def check_urls(self, name: str, env: dict) -> None:
        for variable, default_port in URL_VARIABLES.items():
            if variable not in env:
                continue
            host, port = url_of(env[variable], default_port)
            service = self.services.get(host.split(".")[0])
            if service is None:
                if "." not in host:
                    self.problem(f"{name}: {variable} names {host}, which is no Service of the manifests")
                continue  # an external server (production)
            if port not in [p["port"] for p in service["spec"]["ports"]]:
                self.problem(f"{name}: {variable} uses port {port}, Service {host} offers {[p['port'] for p in service['spec']['ports']]}")

    def check_labels(self) -> None:
        for workload in self.workloads:
            name = workload["metadata"]["name"]
            if INSTANCE not in workload["spec"]["selector"].get("matchLabels", {}):
                self.problem(f"{name}: its selector does not name the instance ({INSTANCE})")
            if PART_OF not in workload["spec"]["template"]["metadata"].get("labels", {}):
                self.problem(f"{name}: its pods are not labelled {PART_OF}")

    def check_namespaces(self) -> None:
        for doc in self.docs:
            if doc["kind"] in ("Namespace",):
                continue
            if doc["metadata"].get("namespace") != self.namespace:
                self.problem(f"{doc['kind']} {doc['metadata']['name']} is in namespace {doc['metadata'].get('namespace')}, not {self.namespace}")

    # --- autoscaling and KEDA -----------------------------------------------------

    def check_autoscaling(self) -> None:
        deployments = {d["metadata"]["name"]: d for d in self.kind("Deployment")}
        for target, scalers in self.autoscalers().items():
            if target not in deployments:
                self.problem(f"{scalers[0]['kind']} {scalers[0]['metadata']['name']} scales {target}, which is no Deployment here")
                continue
            if "replicas" in deployments[target]["spec"]:
                self.problem(f"{target}: sets replicas ({deployments[target]['spec']['replicas']}) though {scalers[0]['kind']} {scalers[0]['metadata']['name']} owns the count: every apply would reset it")
            if len(scalers) > 1:
                self.problem(f"{target}: {len(scalers)} autoscalers ({', '.join(s['kind'] for s in scalers)}) fight over it")
            for scaler in scalers:
                behavior = scaler["spec"].get("behavior") if scaler["kind"] == "HorizontalPodAutoscaler" else \
                    scaler["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
                down = (behavior or {}).get("scaleDown", {})
                policies = down.get("policies", [])
                if down.get("stabilizationWindowSeconds", 0) < 60 or not policies or any(p["type"] != "Pods" or p["value"] != 1 for p in policies):
                    self.problem(f"{scaler['kind']} {scaler['metadata']['name']}: scale-down is not one pod at a time after a quiet window: {down}")
        for scaled in self.kind("ScaledObject"):
            self.check_scaled_object(scaled, deployments.get(scaled["spec"]["scaleTargetRef"]["name"]))

    def check_scaled_object(self, scaled: dict, deployment) -> None:
        name = f"ScaledObject {scaled['metadata']['name']}"
        hpa_name = scaled["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("name")
        if scaled["metadata"].get("annotations", {}).get(TRANSFER) != "true" or hpa_name != scaled["spec"]["scaleTargetRef"]["name"]:
            self.problem(f"{name}: does not adopt the HorizontalPodAutoscaler {scaled['spec']['scaleTargetRef']['name']} a live cluster has ({TRANSFER} and horizontalPodAutoscalerConfig.name): a switch leaves two autoscalers")
        concurrency = 0
        if deployment is not None:
            concurrency = int(self.environment(deployment["spec"]["template"]["spec"]["containers"][0]).get("CONVERTER_CONCURRENCY", "0") or 0)
        auths = {a["metadata"]["name"]: a for a in self.kind("TriggerAuthentication")}
        for trigger in scaled["spec"].get("triggers", []):
            if trigger["type"] != "rabbitmq":
                continue
            meta = trigger.get("metadata", {})
            auth = auths.get(trigger.get("authenticationRef", {}).get("name"))
            ref = next((r for r in (auth or {}).get("spec", {}).get("secretTargetRef", []) if r["parameter"] == "host"), None)
            if ref is None:
                self.problem(f"{name}: its rabbitmq trigger takes the host from no TriggerAuthentication Secret")
                continue
            if self.secrets and ref["key"] not in self.secrets.get(ref["name"], {}):
                self.problem(f"{name}: reads {ref['name']}/{ref['key']}, which the Secrets (scripts/k8s-secrets) lack")
            host_url = self.secrets.get(ref["name"], {}).get(ref["key"], "")
            http = meta.get("protocol") == "http" or (meta.get("protocol", "auto") == "auto" and host_url.startswith("http"))
            if meta.get("mode", "QueueLength") != "QueueLength" or not http or meta.get("excludeUnacknowledged", "false") == "true":
                self.problem(f"{name}: counts only the messages waiting (QueueLength over the HTTP API with excludeUnacknowledged false counts those in flight too): with every converter busy it reads 0 and scales down under them")
            if concurrency and float(meta.get("value", "0")) > concurrency:
                self.problem(f"{name}: one replica per {meta.get('value')} jobs, but a converter runs {concurrency} at once: jobs would wait with room to scale")
            if host_url:
                host, _ = url_of(host_url, 15672)
                first = host.split(".")[0]
                if first in self.services and host not in (f"{first}.{self.namespace}.svc", f"{first}.{self.namespace}.svc.cluster.local"):
                    self.problem(f"{name}: {ref['name']}/{ref['key']} names host {host}, which is not fully qualified: KEDA's operator resolves it from its own namespace ({first}.{self.namespace}.svc.cluster.local)")

    # --- the network policies, as a graph ---------------------------------------------

    def admitted_namespace(self, role: str):
        for policy in self.kind("NetworkPolicy"):
            if policy["metadata"].get("labels", {}).get(ADMITS) == role:
                for rule in policy["spec"].get("ingress", []):
                    for peer in rule.get("from", []):
                        name = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                        if name:
                            return name
        return None

    def required_flows(self) -> set:
        """(source, workload name, container port) of every connection the manifests need.
        A source is ('pod', workload name) or ('namespace', name)."""
        flows = set()
        by_name = {w["metadata"]["name"]: w for w in self.workloads}
        for deployment in self.kind("Deployment"):
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            if image_of(container) not in SERVICES:
                continue
            env = self.environment(container)
            for variable, default_port in URL_VARIABLES.items():
                if variable in env:
                    host, port = url_of(env[variable], default_port)
                    service = self.services.get(host.split(".")[0])
                    if service is not None:
                        workload, target = self.service_target(service, port)
                        if workload is not None:
                            flows.add((("pod", deployment["metadata"]["name"]), workload["metadata"]["name"], target, f"{variable} of {deployment['metadata']['name']}"))
            binary = SERVICES[image_of(container)][0]
            monitoring = self.admitted_namespace("monitoring")
            _, ops = self.ports_of(binary, env)
            flows.add((("namespace", monitoring or "<monitoring>"), deployment["metadata"]["name"], ops, f"Prometheus scraping {deployment['metadata']['name']}"))
        if "rabbitmq" in by_name and self.container_port(by_name["rabbitmq"], BROKER_METRICS_PORT):
            flows.add((("namespace", self.admitted_namespace("monitoring") or "<monitoring>"), "rabbitmq",
                       self.container_port(by_name["rabbitmq"], BROKER_METRICS_PORT), "Prometheus scraping rabbitmq"))
        for ingress in self.kind("Ingress"):
            for rule in ingress["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    service = self.services.get(backend["name"])
                    if service is not None:
                        workload, target = self.service_target(service, backend["port"].get("number") or backend["port"].get("name"))
                        if workload is not None:
                            flows.add((("namespace", self.admitted_namespace("ingress-controller") or "<ingress controller>"), workload["metadata"]["name"], target, "the Ingress"))
        auths = {a["metadata"]["name"]: a for a in self.kind("TriggerAuthentication")}
        for scaled in self.kind("ScaledObject"):
            for trigger in scaled["spec"].get("triggers", []):
                auth = auths.get(trigger.get("authenticationRef", {}).get("name"), {})
                for ref in auth.get("spec", {}).get("secretTargetRef", []):
                    if ref["parameter"] == "host" and self.secrets.get(ref["name"], {}).get(ref["key"]):
                        host, port = url_of(self.secrets[ref["name"]][ref["key"]], 15672)
                        service = self.services.get(host.split(".")[0])
                        if service is not None:
                            workload, target = self.service_target(service, port)
                            if workload is not None:
                                flows.add((("namespace", self.admitted_namespace("keda") or "<keda>"), workload["metadata"]["name"], target, f"KEDA's trigger of {scaled['metadata']['name']}"))
        return flows

    def check_policies(self) -> None:
        policies = self.kind("NetworkPolicy")
        if not policies:
            return
        allowed = set()  # (source, workload, port)
        isolated = set()
        for policy in policies:
            pname = f"NetworkPolicy {policy['metadata']['name']}"
            spec = policy["spec"]
            targets = [w for w in self.workloads if selects(spec.get("podSelector", {}), w["spec"]["template"]["metadata"].get("labels", {}))]
            types = spec.get("policyTypes", ["Ingress"])
            if "Ingress" in types:
                isolated |= {w["metadata"]["name"] for w in targets}
            if "Egress" in types:
                dns = any(port.get("port") in (53, "dns") for rule in spec.get("egress", []) for port in rule.get("ports", []))
                if not dns:
                    self.problem(f"{pname}: limits egress but lets no DNS (port 53) out: every name lookup fails")
            for rule in spec.get("ingress", []):
                peers, ports = rule.get("from"), rule.get("ports")
                if not peers:
                    self.problem(f"{pname}: a rule without `from` admits every source")
                    continue
                if not ports:
                    self.problem(f"{pname}: a rule without `ports` admits every port")
                    continue
                sources = []
                for peer in peers:
                    if not peer or peer.get("podSelector") == {} or peer.get("namespaceSelector") == {}:
                        self.problem(f"{pname}: an empty selector ({peer}) admits every pod or namespace")
                        continue
                    if "ipBlock" in peer:
                        self.problem(f"{pname}: an ipBlock source ({peer['ipBlock']}) is no flow the manifests know")
                        continue
                    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") if "namespaceSelector" in peer else None
                    if "namespaceSelector" in peer and not namespace:
                        self.problem(f"{pname}: a namespaceSelector not by kubernetes.io/metadata.name ({peer['namespaceSelector']}) admits namespaces nobody can list")
                        continue
                    if "podSelector" in peer and namespace in (None, self.namespace):
                        sources += [("pod", w["metadata"]["name"]) for w in self.workloads if selects(peer["podSelector"], w["spec"]["template"]["metadata"].get("labels", {}))]
                    elif "podSelector" in peer:
                        sources.append(("namespace", namespace))  # some pods of another namespace
                    else:
                        sources.append(("namespace", namespace))
                for target in targets:
                    for port in ports:
                        number = self.container_port(target, port.get("port"))
                        if not number:
                            self.problem(f"{pname}: admits {target['metadata']['name']} port {port.get('port')}, which no container of it declares")
                            continue
                        allowed |= {(source, target["metadata"]["name"], number) for source in sources}
        required = self.required_flows()
        for source, workload, port, why in sorted(required, key=str):
            if workload in isolated and (source, workload, port) not in allowed:
                self.problem(f"no NetworkPolicy lets {source[0]} {source[1]} reach {workload}:{port} ({why})")
        needed = {(source, workload, port) for source, workload, port, _ in required}
        for source, workload, port in sorted(allowed - needed, key=str):
            self.problem(f"a NetworkPolicy admits {source[0]} {source[1]} to {workload}:{port}, which nothing needs")

    def check_service_monitors(self) -> None:
        """Each ServiceMonitor endpoint scrapes a metrics port: a service's ops port, the broker's."""
        for monitor in self.kind("ServiceMonitor"):
            selector = monitor["spec"].get("selector", {})
            services = [s for s in self.services.values() if selects(selector, s["metadata"].get("labels", {}))]
            for endpoint in monitor["spec"].get("endpoints", []):
                for service in services:
                    workload, target = self.service_target(service, endpoint.get("port"))
                    if workload is None:
                        continue
                    container = workload["spec"]["template"]["spec"]["containers"][0]
                    if image_of(container) in SERVICES:
                        _, metrics = self.ports_of(SERVICES[image_of(container)][0], self.environment(container))
                    else:
                        metrics = self.container_port(workload, BROKER_METRICS_PORT)
                    if target != metrics or endpoint.get("path", "/metrics") != "/metrics":
                        self.problem(f"ServiceMonitor {monitor['metadata']['name']}: scrapes {endpoint.get('path', '/metrics')} on {service['metadata']['name']}:{endpoint.get('port')} ({target}), not /metrics on its metrics port {metrics}")

    # --- the Ingress ------------------------------------------------------------------

    def check_ingress(self) -> None:
        gateway = self.service_deployment("gateway")
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
            for rule in ingress["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    if path.get("path", "/").startswith(OPS_PATHS):
                        self.problem(f"the Ingress routes {path['path']}, an ops path, to the public")
                    backend = path["backend"]["service"]
                    service = self.services.get(backend["name"])
                    if service is None:
                        self.problem(f"the Ingress routes to {backend['name']}, which is no Service here")
                        continue
                    workload, target = self.service_target(service, backend["port"].get("number") or backend["port"].get("name"))
                    if workload is None:
                        continue
                    container = workload["spec"]["template"]["spec"]["containers"][0]
                    if image_of(container) in SERVICES:
                        _, ops = self.ports_of(SERVICES[image_of(container)][0], self.environment(container))
                        if target == ops:
                            self.problem(f"the Ingress routes to {backend['name']}'s ops port {target} (/metrics, /healthz, /readyz): only its public API port may be routed")

    def run(self) -> list:
        deployments = [d for d in self.kind("Deployment") if image_of(d["spec"]["template"]["spec"]["containers"][0]) in SERVICES]
        if len(deployments) != len(SERVICES):
            self.problem(f"expected the {len(SERVICES)} services' Deployments, found {[d['metadata']['name'] for d in deployments]}")
        for deployment in deployments:
            self.check_deployment(deployment)
        self.check_labels()
        self.check_namespaces()
        self.check_autoscaling()
        self.check_policies()
        self.check_service_monitors()
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


def policy_port(docs: list, name: str, port) -> None:
    find(docs, "NetworkPolicy", name)["spec"]["ingress"][0]["ports"][0]["port"] = port


def add_rule(docs: list, name: str, rule: dict) -> None:
    find(docs, "NetworkPolicy", name)["spec"]["ingress"].append(rule)


def trigger(docs: list) -> dict:
    return find(docs, "ScaledObject", "converter")["spec"]["triggers"][0]["metadata"]


def scale_down(docs: list) -> dict:
    return find(docs, "HorizontalPodAutoscaler", "converter")["spec"]["behavior"]["scaleDown"]


def from_namespace(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


# Each break of a correct render (of the overlay, or of the overlay with
# components/keda), and the words the report must contain.
BREAKS = [
    ("a variable nobody reads", "base", lambda d: find(d, "ConfigMap", "gateway")["data"].update(AMQP_URI="x"), "AMQP_URI, which gateway does not read"),
    ("a variable set to ''", "base", lambda d: find(d, "ConfigMap", "gateway")["data"].update(TRUSTED_PROXIES=""), "TRUSTED_PROXIES to an empty string"),
    ("a required variable missing", "base", lambda d: secret_set(d, "converter", "MONGODB_URI", None), "does not set MONGODB_URI"),
    ("a wrong readiness path", "base", lambda d: container(d, "gateway")["readinessProbe"]["httpGet"].update(path="/ready"), "readinessProbe asks /ready"),
    ("a probe on the public port", "base", lambda d: container(d, "gateway")["livenessProbe"]["httpGet"].update(port="http"), "livenessProbe asks /healthz on http"),
    ("a wrong container port", "base", lambda d: container(d, "converter")["ports"][0].update(containerPort=8091), "converter listens on 8090"),
    ("the ops port undeclared", "base", lambda d: container(d, "gateway")["ports"].pop(1), "serves /metrics, /healthz and /readyz on 8081"),
    ("a key file not mounted", "base", lambda d: find(d, "ConfigMap", "auth")["data"].update(JWT_PRIVATE_KEY_FILE="/var/run/key.pem"), "is in no mounted Secret volume"),
    ("a grace period too short", "base", lambda d: find(d, "Deployment", "notification")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=20), "is not above its 30 s shutdown"),
    ("the converter's drain longer than its grace period", "base", lambda d: find(d, "ConfigMap", "converter")["data"].update(SHUTDOWN_GRACE_SECS="400"), "is not above its 400 s shutdown"),
    ("a preStop sleep eating the gateway's grace", "base", lambda d: container(d, "gateway")["lifecycle"]["preStop"]["sleep"].update(seconds=30), "is not above its 70 s shutdown"),
    ("a Service name misspelt", "base", lambda d: find(d, "ConfigMap", "gateway")["data"].update(AUTH_URL="http://auths:5000"), "names auths, which is no Service"),
    ("a wrong Service port", "base", lambda d: secret_set(d, "gateway", "AMQP_URL", "amqp://u:p@rabbitmq:5673/%2f"), "uses port 5673"),
    ("a network policy missing", "base", lambda d: d.remove(find(d, "NetworkPolicy", "mongodb")), "no NetworkPolicy lets pod converter reach mongodb:27017"),
    ("auth's mail shut out", "base", lambda d: find(d, "NetworkPolicy", "mailpit")["spec"]["ingress"][0]["from"].pop(1), "no NetworkPolicy lets pod auth reach mailpit:1025"),
    ("Prometheus shut out", "base", lambda d: d.remove(find(d, "NetworkPolicy", "monitoring-converter")), "reach converter:8090 (Prometheus"),
    ("a rule admitting every source", "base", lambda d: add_rule(d, "auth", {"ports": [{"port": 5000}]}), "a rule without `from` admits every source"),
    ("an empty selector", "base", lambda d: add_rule(d, "auth", {"from": [{"podSelector": {}}], "ports": [{"port": 5000}]}), "an empty selector"),
    ("a port no container declares", "base", lambda d: policy_port(d, "postgres", 5433), "admits postgres port 5433, which no container of it declares"),
    ("a flow nothing needs", "base", lambda d: add_rule(d, "rabbitmq", {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "auth"}}}], "ports": [{"port": 5672}]}), "admits pod auth to rabbitmq:5672, which nothing needs"),
    ("the ingress controller let into the ops port", "base", lambda d: add_rule(d, "gateway", {"from": [from_namespace("ingress-nginx")], "ports": [{"port": 8081}]}), "admits namespace ingress-nginx to gateway:8081, which nothing needs"),
    ("an egress policy without DNS", "base", lambda d: d.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "egress", "namespace": find(d, "Namespace", "")["metadata"]["name"]}, "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "auth"}}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 5432}]}]}}), "lets no DNS (port 53) out"),
    ("replicas on an autoscaled Deployment", "base", lambda d: find(d, "Deployment", "converter")["spec"].update(replicas=2), "converter: sets replicas (2) though HorizontalPodAutoscaler converter owns the count"),
    ("a fast scale-down", "base", lambda d: scale_down(d).update(policies=[{"type": "Percent", "value": 100, "periodSeconds": 15}]), "scale-down is not one pod at a time"),
    ("the converter's request below its concurrency", "base", lambda d: find(d, "ConfigMap", "converter")["data"].update(CONVERTER_CONCURRENCY="4"), "requests 1 CPU for CONVERTER_CONCURRENCY=4"),
    ("the Ingress routed to the ops port", "base", lambda d: find(d, "Ingress", "gateway")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"].update(name="ops"), "routes to gateway's ops port 8081"),
    ("an ops path routed", "base", lambda d: find(d, "Ingress", "gateway")["spec"]["rules"][0]["http"]["paths"].append({"path": "/metrics", "pathType": "Exact", "backend": {"service": {"name": "gateway", "port": {"name": "http"}}}}), "routes /metrics, an ops path"),
    ("an Ingress body limit too small", "base", lambda d: find(d, "Ingress", "gateway")["metadata"]["annotations"].update({"nginx.ingress.kubernetes.io/proxy-body-size": "1m"}), "proxy-body-size (1m)"),
    ("a selector without the instance", "base", lambda d: find(d, "Deployment", "auth")["spec"]["selector"]["matchLabels"].pop(INSTANCE), "auth: its selector does not name the instance"),
    ("an object outside the namespace", "keda", lambda d: find(d, "ScaledObject", "converter")["metadata"].pop("namespace"), "ScaledObject converter is in namespace None"),
    ("KEDA's host not fully qualified", "keda", lambda d: secret_set(d, "converter-keda", "RABBITMQ_HTTP_URL", "http://keda:x@rabbitmq:15672/"), "names host rabbitmq, which is not fully qualified"),
    ("KEDA shut out of the broker", "keda", lambda d: d.remove(find(d, "NetworkPolicy", "rabbitmq-keda")), "reach rabbitmq:15672 (KEDA's trigger"),
    ("KEDA not adopting the HPA", "keda", lambda d: find(d, "ScaledObject", "converter")["metadata"]["annotations"].pop(TRANSFER), "a switch leaves two autoscalers"),
    ("KEDA blind to jobs in flight", "keda", lambda d: trigger(d).update(excludeUnacknowledged="true"), "counts only the messages waiting"),
    ("KEDA too few replicas per job", "keda", lambda d: trigger(d).update(value="5"), "one replica per 5 jobs"),
    ("a ServiceMonitor on the public port", "keda", lambda d: find(d, "ServiceMonitor", "gateway")["spec"]["endpoints"][0].update(port="http"), "ServiceMonitor gateway: scrapes /metrics on gateway:http (8080), not /metrics on its metrics port 8081"),
    ("two autoscalers", "keda", lambda d: d.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "converter-cpu", "namespace": find(d, "Namespace", "")["metadata"]["name"]}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "converter"}, "maxReplicas": 8, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}}}), "2 autoscalers"),
]


def self_test(binaries: pathlib.Path, path: str, keda_path: str) -> None:
    paths = {"base": path, "keda": keda_path}
    for render in paths.values():
        clean = Checker(render, load(render), binaries).run()
        if clean:
            sys.exit(f"self-test: the unbroken manifests already fail: {clean}")
    missed = []
    for what, render, breaks, expected in BREAKS:
        docs = copy.deepcopy(load(paths[render]))
        breaks(docs)
        report = Checker(paths[render], docs, binaries).run()
        if not any(expected in problem for problem in report):
            missed.append(f"{what}: expected {expected!r}, got {report}")
    for miss in missed:
        print(f"self-test: not caught: {miss}", file=sys.stderr)
    if missed:
        sys.exit(1)
    print(f"manifest check self-test: all {len(BREAKS)} breaks caught")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--self-test":
        self_test(pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) < 3:
        sys.exit(__doc__)
    else:
        binaries = pathlib.Path(sys.argv[1])
        problems = [p for path in sys.argv[2:] for p in Checker(path, load(path), binaries).run()]
        for problem in problems:
            print(f"manifest check: {problem}", file=sys.stderr)
        if problems:
            sys.exit(1)
        print(f"manifest check: {len(sys.argv) - 2} rendered overlays agree with the services")
    for notice in sorted(NOTICES):
        print(f"manifest check: notice: {notice}", file=sys.stderr)


if __name__ == "__main__":
    main()
