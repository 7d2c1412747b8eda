"""Runs a rendered kustomize overlay's workloads on podman, as a cluster would.

usage: runner.py up MANIFESTS.yaml     start every pod, wait until all are ready
       runner.py down                  remove every container, volume and the network
       runner.py status                one line per pod: state, restarts, address

What runs is what the YAML says: each Deployment's and StatefulSet's pods
(as many as `replicas`; a workload without, which an autoscaler owns, as
many as its HorizontalPodAutoscaler's minReplicas or ScaledObject's
minReplicaCount, where a cluster's autoscaler would start) with their image, command, args, env and envFrom
(from the rendered ConfigMaps and Secrets, `$(VAR)` expanded), Secret and
ConfigMap volumes as files, emptyDirs, PVCs as volumes, the user, read-only
root, capabilities and no-new-privileges of the securityContext, and the CPU
and memory limits. All pods share one network on which each is reachable by
its Services' names (and a StatefulSet pod also as `<pod>.<service>`). The
Ingress's backend is published on 127.0.0.1:$CLUSTER_PORT through a TCP
proxy. "Ready" means the manifest's own readinessProbe passes; each
livenessProbe must pass once too.

Not emulated (said at start-up): scheduling and resource requests, emptyDir
size limits, network policies, HPA/PDB, liveness-driven restarts (podman restarts a container
that exits), Service ports that differ from their target ports, and
multi-container pods; a manifest that needs one of these fails here loudly.
Official infrastructure images that cannot be pulled are swapped for the
stand-ins under standins/ (named when it happens).
"""
import base64
import concurrent.futures
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
STATE_DIR = ROOT / "var" / "cluster"
NETWORK = "mp3c-cluster"
LABEL = "io.mp3converter.cluster"
CLUSTER_PORT = int(os.environ.get("CLUSTER_PORT", "8180"))
READY_TIMEOUT = float(os.environ.get("CLUSTER_READY_TIMEOUT", "240"))
# Official image (repository) -> stand-in folder under standins/.
STANDINS = {"mongo": "mongodb", "rabbitmq": "rabbitmq", "postgres": "postgres", "axllent/mailpit": "mailpit"}


class Unsupported(Exception):
    """The manifests need something this runner does not emulate."""


def log(message: str) -> None:
    print(f"cluster: {message}", flush=True)


def podman(*args: str, env: dict | None = None, check: bool = True, capture: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args],
        env={**os.environ, **(env or {})},
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} ...: {(result.stderr or '').strip()}")
    return (result.stdout or "").strip()


# --- Reading the manifests ----------------------------------------------------


class Manifests:
    def __init__(self, text: str):
        docs = [d for d in yaml.safe_load_all(text) if d]
        by_kind: dict[str, list] = {}
        for doc in docs:
            by_kind.setdefault(doc["kind"], []).append(doc)
        self.namespace = next((d["metadata"]["name"] for d in by_kind.get("Namespace", [])), "default")
        self.configmaps = {d["metadata"]["name"]: dict(d.get("data") or {}) for d in by_kind.get("ConfigMap", [])}
        self.secrets = {d["metadata"]["name"]: secret_data(d) for d in by_kind.get("Secret", [])}
        self.services = by_kind.get("Service", [])
        self.ingresses = by_kind.get("Ingress", [])
        self.workloads = by_kind.get("StatefulSet", []) + by_kind.get("Deployment", [])
        # Autoscaler floors by target: the count of a workload without `replicas`.
        self.floors = {}
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            self.floors[hpa["spec"]["scaleTargetRef"]["name"]] = hpa["spec"].get("minReplicas", 1)
        for scaled in by_kind.get("ScaledObject", []):
            self.floors[scaled["spec"]["scaleTargetRef"]["name"]] = max(1, scaled["spec"].get("minReplicaCount", 0))

    def replicas(self, workload: dict) -> int:
        if "replicas" in workload["spec"]:
            return workload["spec"]["replicas"]
        return self.floors.get(workload["metadata"]["name"], 1)


def secret_data(doc: dict) -> dict:
    data = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    data.update(doc.get("stringData") or {})
    return data


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Pod:
    """One replica of a workload, as the runner will start it."""

    def __init__(self, workload: dict, index: int, manifests: Manifests):
        self.workload = workload
        self.kind = workload["kind"]
        self.name = f"{workload['metadata']['name']}-{index}"
        template = workload["spec"]["template"]
        self.labels = template["metadata"].get("labels", {})
        self.spec = template["spec"]
        containers = self.spec["containers"]
        if len(containers) != 1 or self.spec.get("initContainers"):
            raise Unsupported(f"{self.name}: pods with more than one container")
        self.container = containers[0]
        self.manifests = manifests
        self.ports = {p["name"]: p["containerPort"] for p in self.container.get("ports", []) if "name" in p}
        self.services = [s for s in manifests.services if selects(s["spec"].get("selector", {}), self.labels)]

    def aliases(self) -> list[str]:
        names = []
        for service in self.services:
            name = service["metadata"]["name"]
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if self.ports.get(target, target) != port["port"]:
                    raise Unsupported(f"Service {name}: port {port['port']} differs from its target port {target}")
            names += [name, f"{name}.{self.manifests.namespace}", f"{name}.{self.manifests.namespace}.svc"]
        if self.kind == "StatefulSet":
            names.append(f"{self.name}.{self.workload['spec']['serviceName']}")
        return names

    def port_number(self, port) -> int:
        if isinstance(port, int):
            return port
        if port in self.ports:
            return self.ports[port]
        raise Unsupported(f"{self.name}: probe port {port!r} is no named port of the container")


def expand(value: str, env: dict) -> str:
    """Kubernetes' `$(VAR)` references to variables defined before; `$$` escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def resolve_env(pod: Pod) -> dict:
    m, env = pod.manifests, {}
    for source in pod.container.get("envFrom", []):
        if "configMapRef" in source:
            ref, table, what = source["configMapRef"], m.configmaps, "ConfigMap"
        else:
            ref, table, what = source["secretRef"], m.secrets, "Secret"
        if ref["name"] not in table:
            if ref.get("optional"):
                continue
            raise Unsupported(f"{pod.name}: envFrom names the {what} {ref['name']}, which the manifests lack")
        for key, value in table[ref["name"]].items():
            env[source.get("prefix", "") + key] = value
    for item in pod.container.get("env", []):
        if "value" in item or "valueFrom" not in item:
            env[item["name"]] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if "configMapKeyRef" in source or "secretKeyRef" in source:
            ref = source.get("configMapKeyRef") or source["secretKeyRef"]
            table = m.configmaps if "configMapKeyRef" in source else m.secrets
            value = table.get(ref["name"], {}).get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                raise Unsupported(f"{pod.name}: env {item['name']} names {ref['name']}/{ref['key']}, which is missing")
            env[item["name"]] = value
        elif source.get("fieldRef", {}).get("fieldPath") in ("metadata.name", "metadata.namespace"):
            path = source["fieldRef"]["fieldPath"]
            env[item["name"]] = pod.name if path == "metadata.name" else m.namespace
        else:
            raise Unsupported(f"{pod.name}: env {item['name']} uses {list(source)}")
    return env


# --- Turning a pod into `podman run` -------------------------------------------


def security_args(pod: Pod, image_user: str) -> list[str]:
    pod_ctx, ctx = pod.spec.get("securityContext", {}), pod.container.get("securityContext", {})
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    args = []
    if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
        # The kubelet's check: the user must be known to be non-zero.
        effective = str(user) if user is not None else image_user.split(":")[0]
        if not effective.isdigit():
            raise Unsupported(f"{pod.name}: runAsNonRoot with the image's non-numeric user {effective!r}")
        if int(effective) == 0:
            raise Unsupported(f"{pod.name}: runAsNonRoot, but it would run as root")
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if "fsGroup" in pod_ctx:
        args += ["--group-add", str(pod_ctx["fsGroup"])]
    if ctx.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    caps = ctx.get("capabilities", {})
    args += [f"--cap-drop={c.lower()}" for c in caps.get("drop", [])]
    args += [f"--cap-add={c.lower()}" for c in caps.get("add", [])]
    if ctx.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if ctx.get("privileged"):
        raise Unsupported(f"{pod.name}: privileged containers")
    return args


def quantity(value, binary_units: dict) -> float:
    text = str(value)
    for suffix, factor in binary_units.items():
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def resource_args(pod: Pod) -> list[str]:
    limits = pod.container.get("resources", {}).get("limits", {})
    args = []
    if "cpu" in limits:
        args += ["--cpus", f"{quantity(limits['cpu'], {'m': 0.001}):g}"]
    if "memory" in limits:
        units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
        args += ["--memory", str(int(quantity(limits["memory"], units)))]
    return args


def volume_args(pod: Pod) -> list[str]:
    """Secret and ConfigMap volumes as files, emptyDirs as tmpfs, PVCs as volumes."""
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in pod.workload["spec"].get("volumeClaimTemplates", [])}
    fs_group = pod.spec.get("securityContext", {}).get("fsGroup")
    args = []
    for mount in pod.container.get("volumeMounts", []):
        name, path = mount["name"], mount["mountPath"]
        if "subPath" in mount:
            raise Unsupported(f"{pod.name}: volume mounts with a subPath")
        if name in claims:
            volume = f"mp3c-{name}-{pod.name}"
            podman("volume", "create", "--label", f"{LABEL}=1", volume, check=False)
            args += ["-v", f"{volume}:{path}:U"]
            continue
        volume = volumes.get(name)
        if volume is None:
            raise Unsupported(f"{pod.name}: volumeMount {name} names no volume of the pod")
        if "emptyDir" in volume:
            # As the kubelet makes one: a new, empty, world-writable folder
            # (in memory for `medium: Memory`). sizeLimit is not enforced.
            if volume["emptyDir"].get("medium") == "Memory":
                args += ["--mount", f"type=tmpfs,destination={path},tmpfs-mode=0777,notmpcopyup"]
            else:
                folder = STATE_DIR / "volumes" / pod.name / name
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                os.chmod(folder, 0o777)
                args += ["-v", f"{folder}:{path}"]
        elif "secret" in volume or "configMap" in volume:
            folder = files_volume(pod, name, volume, fs_group)
            args += ["-v", f"{folder}:{path}:ro" if mount.get("readOnly", True) else f"{folder}:{path}"]
        else:
            raise Unsupported(f"{pod.name}: volume {name} of type {[k for k in volume if k != 'name']}")
    return args


def files_volume(pod: Pod, name: str, volume: dict, fs_group) -> pathlib.Path:
    if "secret" in volume:
        source, table, ref = volume["secret"], pod.manifests.secrets, volume["secret"]["secretName"]
    else:
        source, table, ref = volume["configMap"], pod.manifests.configmaps, volume["configMap"]["name"]
    if ref not in table:
        raise Unsupported(f"{pod.name}: volume {name} names {ref}, which the manifests lack")
    data = table[ref]
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    folder = STATE_DIR / "volumes" / pod.name / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for item in items:
        if item["key"] not in data:
            raise Unsupported(f"{pod.name}: volume {name} wants key {item['key']} of {ref}, which is missing")
        file = folder / item["path"]
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(data[item["key"]])
        # As the kubelet: root-owned, group fsGroup, the manifest's mode.
        os.chown(file, 0, fs_group if fs_group is not None else 0)
        os.chmod(file, item.get("mode", source.get("defaultMode", 0o644)))
    os.chmod(folder, 0o755)
    return folder


def repository(image: str) -> str:
    """`docker.io/library/mongo:7.0` -> `mongo`."""
    name = image.split("@")[0]
    if ":" in name.split("/")[-1]:
        name = name.rsplit(":", 1)[0]
    return re.sub(r"^docker\.io/(library/)?", "", name)


def pullable(image: str) -> bool:
    """True when the image is here, or a registry gives it to us now."""
    if image_exists(image):
        return True
    name = image if "/" in image.split(":")[0] and "." in image.split("/")[0] else f"docker.io/{image}"
    try:
        return subprocess.run(["podman", "pull", "-q", name], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def image_of(pod: Pod, standins: dict) -> str:
    image = pod.container["image"]
    if image_exists(image):
        return image
    folder = STANDINS.get(repository(image))
    if folder is None:
        raise Unsupported(f"{pod.name}: image {image} is not built (scripts/images builds the services' images)")
    log(f"{pod.name}: {image} cannot be pulled here; running the stand-in {standins[folder]} instead (without the manifest's CPU and memory limits)")
    return standins[folder]


def image_exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image]).returncode == 0


def start_pod(pod: Pod, standins: dict) -> dict:
    image = image_of(pod, standins)
    image_user = podman("image", "inspect", "--format", "{{.Config.User}}", image)
    env = resolve_env(pod)
    args = ["run", "-d", "--name", pod.name, "--hostname", pod.name, "--pull=never", "--restart=always"]
    args += ["--network", NETWORK] + [f"--network-alias={a}" for a in pod.aliases()]
    args += ["--label", f"{LABEL}=1", "--label", f"{LABEL}.workload={pod.workload['metadata']['name']}"]
    args += security_args(pod, image_user) + volume_args(pod)
    # The limits were chosen for the official image; a stand-in (SecantusDB
    # holds far more in memory than mongod) runs without them.
    args += resource_args(pod) if image == pod.container["image"] else []
    # Values travel in the environment of `podman run`, never on its command line.
    args += [f"--env={name}" for name in env]
    command, container_args = pod.container.get("command"), pod.container.get("args", [])
    if command:
        args += ["--entrypoint", json.dumps([expand(c, env) for c in command])]
    args += [image] + [expand(a, env) for a in container_args]
    podman(*args, env=env)
    return {"name": pod.name, "workload": pod.workload["metadata"]["name"], "image": image, "ports": pod.ports}


# --- Probes ----------------------------------------------------------------------


def address(pod_name: str) -> str:
    return podman("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}', pod_name, check=False)


def probe_passes(pod: Pod, probe: dict) -> bool:
    timeout = probe.get("timeoutSeconds", 1)
    if "exec" in probe:
        try:
            result = subprocess.run(
                ["podman", "exec", pod.name, *probe["exec"]["command"]],
                capture_output=True,
                timeout=timeout + 5,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0
    ip = address(pod.name)
    if not ip:
        return False
    if "tcpSocket" in probe:
        try:
            socket.create_connection((ip, pod.port_number(probe["tcpSocket"]["port"])), timeout=timeout).close()
            return True
        except OSError:
            return False
    get = probe["httpGet"]
    url = f"http://{ip}:{pod.port_number(get['port'])}{get.get('path', '/')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 400
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(pods: list[Pod], started: float) -> None:
    waiting = {p.name: p for p in pods}
    deadline = time.monotonic() + READY_TIMEOUT
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        while waiting:
            if time.monotonic() > deadline:
                for name in waiting:
                    log(f"{name} never became ready; its last log lines:")
                    print(podman("logs", "--tail", "20", name, check=False), file=sys.stderr)
                raise SystemExit(f"cluster: not ready after {READY_TIMEOUT:.0f}s: {', '.join(sorted(waiting))}")
            checks = {
                name: pool.submit(probe_passes, pod, pod.container["readinessProbe"])
                for name, pod in waiting.items()
                if time.monotonic() - started >= pod.container["readinessProbe"].get("initialDelaySeconds", 0)
            }
            for name, check in checks.items():
                if check.result():
                    log(f"ready: {name} ({time.monotonic() - started:.0f}s)")
                    del waiting[name]
            time.sleep(1)
    for pod in pods:
        liveness = pod.container.get("livenessProbe")
        if liveness and not probe_passes(pod, liveness):
            raise SystemExit(f"cluster: {pod.name} is ready but its livenessProbe fails: it would be restarted")


# --- Stand-ins and the ingress proxy ---------------------------------------------


def build_standins(needed: set[str]) -> dict:
    """Builds (once per content) the stand-in images; returns folder -> image."""
    images = {}
    certs = "/etc/ssl/certs"
    for folder in sorted(needed | {"ingress"}):
        context = HERE / "standins" / folder
        digest = hashlib.sha256()
        for file in sorted(context.rglob("*")) + [ROOT / "scripts" / "smtp-catcher.py"]:
            if file.is_file():
                digest.update(file.read_bytes())
        image = f"localhost/mp3c-standin-{folder}:{digest.hexdigest()[:12]}"
        if not image_exists(image):
            log(f"building the stand-in image {image}")
            podman(
                "build", "--quiet", "-t", image, "-v", f"{certs}:/host-certs:ro",
                "--build-context", f"scripts={ROOT / 'scripts'}", str(context),
            )
        images[folder] = image
    return images


def start_ingress(manifests: Manifests, image: str) -> str:
    if len(manifests.ingresses) != 1 or len(manifests.ingresses[0]["spec"]["rules"]) != 1:
        raise Unsupported("exactly one Ingress with one rule")
    rule = manifests.ingresses[0]["spec"]["rules"][0]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    service = next(s for s in manifests.services if s["metadata"]["name"] == backend["name"])
    port = next(
        p["port"] for p in service["spec"]["ports"]
        if p["port"] == backend["port"].get("number") or p.get("name") == backend["port"].get("name")
    )
    podman(
        "run", "-d", "--name", "ingress", "--pull=never", "--restart=always", "--network", NETWORK,
        "--label", f"{LABEL}=1", "--read-only", "--cap-drop=all", "--security-opt", "no-new-privileges",
        "-p", f"127.0.0.1:{CLUSTER_PORT}:8080", image, "8080", backend["name"], str(port),
    )
    return f"Ingress {rule.get('host', '*')} -> {backend['name']}:{port} on http://127.0.0.1:{CLUSTER_PORT}"


# --- Commands ----------------------------------------------------------------------


def up(manifest_file: str) -> None:
    started = time.monotonic()
    manifests = Manifests(pathlib.Path(manifest_file).read_text())
    if subprocess.run(["podman", "network", "exists", NETWORK]).returncode == 0:
        raise SystemExit("cluster: already up (scripts/cluster-down removes it)")
    log("not emulated here: scheduling and requests, network policies, autoscalers, disruption budgets, "
        "restarts on failed liveness probes")
    pods = [
        Pod(w, i, manifests)
        for w in manifests.workloads
        for i in range(manifests.replicas(w))
    ]
    needed = {
        STANDINS[repository(pod.container["image"])]
        for pod in pods
        if repository(pod.container["image"]) in STANDINS and not pullable(pod.container["image"])
    }
    standins = build_standins(needed)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    podman("network", "create", "--label", f"{LABEL}=1", NETWORK)
    state = [start_pod(pod, standins) for pod in pods]
    ingress = start_ingress(manifests, standins["ingress"])
    log(f"started {len(pods)} pods; waiting for their readiness probes")
    wait_until_ready(pods, time.monotonic())
    for entry in state:
        entry["ip"] = address(entry["name"])
    (STATE_DIR / "pods.json").write_text(json.dumps(state, indent=2))
    log(f"all {len(pods)} pods ready in {time.monotonic() - started:.0f}s; {ingress}")


def down() -> None:
    containers = podman("ps", "-a", "-q", "--filter", f"label={LABEL}").split()
    if containers:
        # A stop first: podman does not restart what it was told to stop,
        # and each pod gets its SIGTERM and a grace as a cluster would give.
        podman("stop", "-t", "30", *containers, check=False)
        for attempt in range(10):
            if subprocess.run(["podman", "rm", "-f", *containers], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        else:
            podman("rm", "-f", *containers)
    volumes = podman("volume", "ls", "-q", "--filter", f"label={LABEL}").split()
    if volumes:
        podman("volume", "rm", "-f", *volumes)
    if subprocess.run(["podman", "network", "exists", NETWORK]).returncode == 0:
        podman("network", "rm", "-f", NETWORK)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    log(f"removed {len(containers)} containers, {len(volumes)} volumes and the network {NETWORK}")


def status() -> None:
    fmt = "{{.Name}}\t{{.State.Status}}\t{{.RestartCount}}"
    names = podman("ps", "-a", "--filter", f"label={LABEL}", "--format", "{{.Names}}").split()
    for name in sorted(names):
        line = podman("inspect", "--format", fmt, name)
        print(f"{line}\t{address(name)}")


def main() -> None:
    command = sys.argv[1:2]
    try:
        if command == ["up"] and len(sys.argv) == 3:
            up(sys.argv[2])
        elif command == ["down"]:
            down()
        elif command == ["status"]:
            status()
        else:
            sys.exit(__doc__)
    except Unsupported as err:
        sys.exit(f"cluster: the manifests need what this runner does not do: {err}")


if __name__ == "__main__":
    main()
