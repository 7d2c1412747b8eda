"""Checks the alert rules and dashboards against the metrics that really exist.

usage: check_observability.py RENDERED.yaml --from-sources
         the names the services' Rust sources export (metrics::counter!,
         gauge!, histogram! -> _bucket/_sum/_count, with their label keys)
         and RabbitMQ's (rabbitmq-prometheus-metrics.txt, from the
         rabbitmq_prometheus plugin's collector): offline
       check_observability.py RENDERED.yaml --names FILE
         the names in FILE, one a line: `name [label,label,...]`
       check_observability.py RENDERED.yaml --scrape URL [URL ...]
         the names (and labels) the given /metrics endpoints serve now, e.g.
         each pod's ops port on the podman cluster. A counter appears only
         once it was first incremented: scrape after some traffic.
       check_observability.py --self-test RENDERED.yaml
         breaks an expression three ways and fails unless each is reported

RENDERED.yaml is a render holding components/observability: every
PrometheusRule's expressions and every Grafana dashboard ConfigMap's
(label grafana_dashboard) panel queries. Each must parse (PyPI promql-parser),
name only metrics of the set, and match only on labels those metrics carry
or Prometheus adds to every target (job, instance, namespace, pod, ...).
Grafana's $__rate_interval and friends count as 5m. Prints every problem
and exits 1 when there is one.
"""
import json
import pathlib
import re
import sys
import urllib.request

import promql_parser
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RABBITMQ_NAMES = pathlib.Path(__file__).resolve().parent / "rabbitmq-prometheus-metrics.txt"
# Labels Prometheus (and the Prometheus Operator's ServiceMonitors) put on
# every scraped series, and the series it makes itself.
TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
BUILTIN = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}
GRAFANA_RANGES = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
MACRO = re.compile(r"\b(counter|gauge|histogram)!\(")


def names_from_sources(root: pathlib.Path) -> dict:
    """metric name -> label keys, from the services' metrics macros (tests left out)."""
    found: dict = {}
    for path in sorted((root / "services").rglob("*.rs")):
        if "/tests/" in str(path) or "/testing/" in str(path):
            continue
        text = path.read_text()
        for match in MACRO.finditer(text):
            depth, end = 1, match.end()
            while depth and end < len(text):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.end():end - 1]
            name = re.match(r'\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"', call)
            if not name:
                continue
            labels = set(re.findall(r'"([a-zA-Z_][a-zA-Z0-9_]*)"\s*=>', call))
            if match.group(1) == "histogram":
                found.setdefault(name.group(1) + "_bucket", set()).update(labels | {"le"})
                found.setdefault(name.group(1) + "_sum", set()).update(labels)
                found.setdefault(name.group(1) + "_count", set()).update(labels)
            else:
                found.setdefault(name.group(1), set()).update(labels)
    return found


def names_from_file(path: pathlib.Path) -> dict:
    found: dict = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, labels = line.partition(" ")
            found.setdefault(name, set()).update(l for l in labels.strip().split(",") if l)
    return found


def names_from_exposition(text: str) -> dict:
    found: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s", line)
        if match:
            labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
            found.setdefault(match.group(1), set()).update(labels)
    return found


def expressions(docs: list) -> list:
    """(where, expression) of every rule and dashboard query."""
    found = []
    for doc in docs:
        if doc["kind"] == "PrometheusRule":
            for group in doc["spec"].get("groups", []):
                for rule in group.get("rules", []):
                    found.append((f"PrometheusRule {doc['metadata']['name']}: {rule.get('alert') or rule.get('record')}", rule["expr"]))
        if doc["kind"] == "ConfigMap" and (doc["metadata"].get("labels") or {}).get("grafana_dashboard") == "1":
            for key, text in (doc.get("data") or {}).items():
                dashboard = json.loads(text)
                stack = list(dashboard.get("panels", []))
                while stack:
                    panel = stack.pop(0)
                    stack += panel.get("panels", [])
                    for target in panel.get("targets", []):
                        if target.get("expr"):
                            found.append((f"dashboard {key}: {panel.get('title')} {target.get('refId', '')}", target["expr"]))
    return found


def recorded(docs: list) -> dict:
    return {rule["record"]: set() for doc in docs if doc["kind"] == "PrometheusRule"
            for group in doc["spec"].get("groups", []) for rule in group.get("rules", []) if "record" in rule}


def check(docs: list, known: dict) -> list:
    known = {**BUILTIN, **recorded(docs), **known}
    problems = []
    found = expressions(docs)
    if not found:
        problems.append("no PrometheusRule or dashboard query found (is components/observability in the render?)")
    for where, expr in found:
        text = GRAFANA_RANGES.sub("5m", expr)
        try:
            tree = promql_parser.parse(text)
        except Exception as err:  # the parser raises its own exception types
            problems.append(f"{where}: does not parse: {err}")
            continue
        selectors = []
        promql_parser.walk(tree, lambda node: selectors.append(node) if isinstance(node, promql_parser.VectorSelector) else None)
        for selector in selectors:
            matchers = list(selector.matchers.matchers) if selector.matchers else []
            name = selector.name or next((m.value for m in matchers if m.name == "__name__" and str(m.op).endswith("Equal")), None)
            if name is None:
                problems.append(f"{where}: a selector without a metric name ({selector})")
                continue
            if name not in known:
                problems.append(f"{where}: {name} is not a metric the services or RabbitMQ export")
                continue
            for matcher in matchers:
                if matcher.name != "__name__" and matcher.name not in known[name] | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {matcher.name} (it has {sorted(known[name]) or 'none'})")
    return problems


def self_test(docs: list) -> None:
    known = {**names_from_sources(ROOT), **names_from_file(RABBITMQ_NAMES)}
    if check(docs, known):
        sys.exit(f"self-test: the unbroken render already fails: {check(docs, known)}")
    rule = next(r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"])
    original = rule["expr"]
    missed = []
    for broken, expected in (
        ("sum(rate(converter_conversion_total[5m])) > 0", "converter_conversion_total is not a metric"),
        ('sum(rate(converter_conversions_total{result="failed"}[5m])) > 0', "has no label result"),
        ("sum(rate(converter_conversions_total[5m]) > 0", "does not parse"),
    ):
        rule["expr"] = broken
        report = check(docs, known)
        if not any(expected in problem for problem in report):
            missed.append(f"expected {expected!r}, got {report}")
    rule["expr"] = original
    for miss in missed:
        print(f"self-test: not caught: {miss}", file=sys.stderr)
    if missed:
        sys.exit(1)
    print("observability check self-test: all 3 breaks caught")


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--self-test":
        return self_test([d for d in yaml.safe_load_all(pathlib.Path(args[1]).read_text()) if d])
    if len(args) < 2:
        sys.exit(__doc__)
    docs = [d for d in yaml.safe_load_all(pathlib.Path(args[0]).read_text()) if d]
    if args[1] == "--from-sources" and len(args) == 2:
        known = {**names_from_sources(ROOT), **names_from_file(RABBITMQ_NAMES)}
        source = "the services' sources and rabbitmq_prometheus"
    elif args[1] == "--names" and len(args) == 3:
        known, source = names_from_file(pathlib.Path(args[2])), args[2]
    elif args[1] == "--scrape" and len(args) > 2:
        known = {}
        for url in args[2:]:
            with urllib.request.urlopen(url, timeout=10) as response:
                for name, labels in names_from_exposition(response.read().decode()).items():
                    known.setdefault(name, set()).update(labels)
        source = f"{len(args) - 2} scraped endpoints"
    else:
        sys.exit(__doc__)
    problems = check(docs, known)
    for problem in problems:
        print(f"observability check: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"observability check: {len(expressions(docs))} expressions parse and use only metrics of {source}")


if __name__ == "__main__":
    main()
