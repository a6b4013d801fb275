#!/usr/bin/env python3
"""Checks of the deployment files against the real binary. Run through deploy/check.sh, which
installs promtool/prometheus and PyYAML when missing and builds wsgate when needed.

  static   every YAML manifest parses; the Kubernetes, compose, Docker and systemd files agree
           with each other and with the routing files; `wsgate check` passes on
           config.example.yaml and the compose and Kubernetes routing files; promtool checks
           the rules (and their unit tests) and the Prometheus configuration
  demo     `wsgate demo` serves traffic; `promtool check metrics` on its /metrics; every metric
           name of the dashboard and the alerts exists in that scrape; the image's HEALTHCHECK
           command works; a real Prometheus with the shipped configuration scrapes it, loads
           the rules without errors, answers every dashboard query with data and has no alert
           active
  compose  the compose services' commands, run natively on free loopback ports: the
           certificate, issuer, echo backend and proxy work together (token, 101, echo, 401,
           SIGHUP reload, SIGTERM exits 0)
"""

import argparse
import base64
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROCS = []  # (name, Popen) of every process started here, stopped in stop_all()
PROBLEMS = []


class Failed(Exception):
    pass


def step(title):
    print(f"== {title}", flush=True)


def check(ok, message):
    if not ok:
        PROBLEMS.append(message)
        print(f"   FAIL {message}", flush=True)
    return ok


def end_phase(name):
    if PROBLEMS:
        raise Failed(f"{name}: {len(PROBLEMS)} problem(s), listed above")


def run(argv, timeout=60, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)


# --- processes --------------------------------------------------------------------------------

def start(name, argv, logs, env=None, stdout=None):
    log = open(logs / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=stdout or log, stderr=log, env=env, start_new_session=True)
    PROCS.append((name, proc))
    return proc


def stop(proc, sig=signal.SIGTERM, timeout=10):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        return None


def stop_all():
    for _, proc in reversed(PROCS):
        stop(proc, timeout=5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, probe, timeout, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs:
            if proc.poll() is not None:
                raise Failed(f"{name} exited with {proc.returncode} while waiting for {what}")
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise Failed(f"timed out after {timeout}s waiting for {what}")


# --- HTTP and WebSocket clients (loopback only) ----------------------------------------------

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url, headers=None, method="GET", data=None, timeout=5):
    assert urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost"), url
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with OPENER.open(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode(), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers
    except (urllib.error.URLError, OSError):
        return None, "", {}


def upgrade(port, ca, path, headers=None):
    """Opens TLS to the proxy and sends an upgrade request; returns (socket, status)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    lines = [f"GET {path} HTTP/1.1", f"Host: localhost:{port}"]
    if headers is not False:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(1)
        if not chunk:
            break
        head += chunk
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None
    return tls, status


def ws_send(sock, opcode, payload):
    mask = os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


def ws_recv(sock):
    """The next data or close frame (opcode, payload); pings are skipped."""
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise Failed("the proxy closed the connection mid-frame")
            data += chunk
        return data
    while True:
        first, second = exactly(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(exactly(8), "big")
        payload = exactly(length)
        if first & 0x0F not in (0x9, 0xA):
            return first & 0x0F, payload


def echo_through(port, ca, path, token, text):
    sock, status = upgrade(port, ca, path, {"Authorization": f"Bearer {token}"})
    with sock:
        if status != 101:
            return status, None
        ws_send(sock, 0x1, text.encode())
        opcode, payload = ws_recv(sock)
        ws_send(sock, 0x8, (1000).to_bytes(2, "big"))
        ws_recv(sock)  # the close reply
        return status, payload.decode() if opcode == 0x1 else None


def refusal(port, ca, path, headers=None):
    sock, status = upgrade(port, ca, path, headers)
    sock.close()
    return status


# --- files --------------------------------------------------------------------------------

def load_yaml_docs(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def duration(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    if not match:
        raise Failed(f"not a duration: {text!r}")
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


def shutdown_grace(routing):
    return duration(routing["listen"].get("shutdown_grace", "30s"))


def dashboard_queries():
    """(where, expression) of every query of the Grafana dashboard."""
    dashboard = json.loads((DEPLOY / "grafana/wsgate.json").read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            queries.append((f"variable {var['name']}", var["query"]["query"]))
    return queries


def alert_rules(name="alerts.yaml"):
    rules = []
    for group in load_yaml_docs(DEPLOY / "prometheus" / name)[0]["groups"]:
        rules += group["rules"]
    return rules


def shipped_rules():
    """The rules of every file prometheus.yml loads (alerts-fleet.yaml's series exist only with
    a `cluster`, so the demo's scrape is checked against alerts.yaml alone)."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    return [rule for name in config["rule_files"] for rule in alert_rules(name)]


# Series that exist only with a `cluster` block (Redis-shared fleet state): the demo has none,
# so the dashboard's fleet row is checked for valid PromQL but not for names or data.
FLEET_ONLY = re.compile(r"\bwsgate_cluster_")


def grafana_to_promql(expr):
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            .replace("$instance", ".*").replace("$route", ".*"))


def metric_names(exprs):
    return {name for expr in exprs for name in re.findall(r"\bwsgate_[A-Za-z0-9_]+", expr)}


# --- static checks --------------------------------------------------------------------------

def yaml_files():
    files = [ROOT / "docker-compose.yml", ROOT / "config.example.yaml"]
    files += sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    return files


def check_parse():
    step("YAML manifests parse (every document) and the dashboard is JSON")
    for path in yaml_files():
        try:
            docs = load_yaml_docs(path)
            check(docs and all(isinstance(d, dict) for d in docs),
                  f"{path.relative_to(ROOT)}: expected mappings, got {docs!r:.80}")
        except yaml.YAMLError as error:
            check(False, f"{path.relative_to(ROOT)}: {error}")
    try:
        json.loads((DEPLOY / "grafana/wsgate.json").read_text())
    except ValueError as error:
        check(False, f"deploy/grafana/wsgate.json: {error}")
    print(f"   {len(yaml_files())} YAML files", flush=True)


def kubernetes():
    """Checks the manifests against each other; returns (routing file text, admin token)."""
    step("Kubernetes manifests agree with each other and with the routing file")
    objects = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in load_yaml_docs(path):
            for key in ("apiVersion", "kind", "metadata"):
                check(key in doc, f"{path.name}: a document without {key}")
            objects.setdefault(doc.get("kind"), []).append(doc)
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"):
        check(kind in objects, f"no {kind}")
    if PROBLEMS:
        return None, None
    deployment = objects["Deployment"][0]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = spec["containers"][0]

    def selects(selector):
        return all(labels.get(k) == v for k, v in selector.items())
    check(selects(deployment["spec"]["selector"]["matchLabels"]), "Deployment selector")
    for service in objects["Service"]:
        check(selects(service["spec"]["selector"]), f"Service {service['metadata']['name']} selector")
    for pdb in objects["PodDisruptionBudget"]:
        check(selects(pdb["spec"]["selector"]["matchLabels"]), "PodDisruptionBudget selector")

    args = container["args"]
    config_path = args[args.index("--config") + 1]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_mount = mounts.get(os.path.dirname(config_path))
    check(config_mount and config_mount.get("readOnly"), f"{config_path}: no read-only mount of its directory")
    configmap_name = volumes[config_mount["name"]]["configMap"]["name"] if config_mount else None
    configmaps = {c["metadata"]["name"]: c for c in objects["ConfigMap"]}
    text = configmaps.get(configmap_name, {}).get("data", {}).get(os.path.basename(config_path))
    if not check(text, f"ConfigMap {configmap_name} has no key {os.path.basename(config_path)}"):
        return None, None
    routing = yaml.safe_load(text)
    admin_port = port_of(routing["admin"]["address"])
    listen_port = port_of(routing["listen"]["address"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports.get("admin") == admin_port, "container port admin != admin.address port")
    check(listen_port in ports.values(), "listen.address port is not a container port")
    check(routing["admin"]["address"].startswith("0.0.0.0:"), "admin.address must bind the pod network")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{probe} is not GET {path}")
        check(ports.get(get.get("port"), get.get("port")) == admin_port, f"{probe} not on the admin port")
    annotations = pod["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    check(annotations.get("prometheus.io/port") == str(admin_port), "prometheus.io/port != admin port")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else None
    check(sleep, "no preStop sleep")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(sleep and grace > sleep + shutdown_grace(routing),
          f"terminationGracePeriodSeconds {grace} <= preStop {sleep}s + shutdown_grace {shutdown_grace(routing)}s")
    requests = container.get("resources", {}).get("requests", {})
    check("cpu" in requests and "memory" in requests, "no cpu and memory requests")
    security = container.get("securityContext", {})
    check(security.get("readOnlyRootFilesystem") is True, "no readOnlyRootFilesystem")
    check(security.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation not false")
    check(True in (security.get("runAsNonRoot"), spec.get("securityContext", {}).get("runAsNonRoot")),
          "no runAsNonRoot")
    for service in objects["Service"]:
        for port in service["spec"]["ports"]:
            check(port["targetPort"] in ports or port["targetPort"] in ports.values(),
                  f"Service {service['metadata']['name']} targets unknown port {port['targetPort']}")
    # The admin token: env from the Secret, referenced by the routing file.
    check("${WSGATE_ADMIN_TOKEN}" in str(routing["admin"].get("token")), "admin.token is not ${WSGATE_ADMIN_TOKEN}")
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env.get("WSGATE_ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
    secrets = {s["metadata"]["name"]: s for s in objects["Secret"]}
    secret = secrets.get(ref.get("name"), {})
    token = secret.get("stringData", {}).get(ref.get("key"))
    if token is None and ref.get("key") in secret.get("data", {}):
        token = base64.b64decode(secret["data"][ref["key"]]).decode()
    check(token, "WSGATE_ADMIN_TOKEN does not come from a key of a Secret in secret.yaml")
    # The certificate files lie in a mounted Secret.
    for key in ("cert", "key"):
        mount = mounts.get(os.path.dirname(routing["listen"]["tls"][key]), {})
        check("secret" in volumes.get(mount.get("name"), {}), f"listen.tls.{key} is not in a mounted Secret")
    return text, token


def compose():
    """Checks docker-compose.yml against the files it mounts; returns the parsed file."""
    step("docker-compose.yml agrees with the files it mounts")
    stack = load_yaml_docs(ROOT / "docker-compose.yml")[0]
    services = stack["services"]
    for name in ("certs", "wsgate", "issuer", "echo", "prometheus", "grafana"):
        check(name in services, f"no service {name}")
    if PROBLEMS:
        return stack
    mounts = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            mounts[(name, target)] = source
            if source.startswith("./"):
                check((ROOT / source).exists(), f"{name}: mounts missing {source}")
            else:
                check(source in stack.get("volumes", {}), f"{name}: undeclared volume {source}")
    wsgate, issuer, echo = services["wsgate"], services["issuer"], services["echo"]
    config = wsgate["command"][wsgate["command"].index("--config") + 1]
    source = mounts.get(("wsgate", os.path.dirname(config)), "")
    check(source == "./deploy/compose", f"wsgate's {config} does not come from ./deploy/compose")
    routing = yaml.safe_load((DEPLOY / "compose/wsgate.yaml").read_text())
    published = {int(p.rsplit(":", 1)[1]) for p in wsgate.get("ports", [])}
    for key in ("listen", "admin"):
        check(port_of(routing[key]["address"]) in published, f"{key}.address port is not published")
    for name in ("issuer", "echo"):
        check(services[name].get("network_mode") == "service:wsgate", f"{name} does not share wsgate's network")
    arg = lambda service, flag: service["command"][service["command"].index(flag) + 1]
    provider = routing["providers"][0]
    check(arg(issuer, "--issuer") == provider["issuer"], "issuer --issuer != providers[0].issuer")
    check(arg(issuer, "--audience") in provider["audiences"], "issuer --audience not in providers[0].audiences")
    check(port_of(arg(issuer, "--listen")) in published, "the issuer's port is not published")
    jwks = urllib.parse.urlsplit(provider["jwks_url"])
    check(jwks.port == port_of(arg(issuer, "--listen")) and jwks.hostname == "127.0.0.1",
          "jwks_url is not the issuer on 127.0.0.1")
    backend = urllib.parse.urlsplit(routing["routes"][0]["backend"])
    check(backend.port == port_of(arg(echo, "--listen")), "the route's backend is not the echo port")
    check(duration(wsgate.get("stop_grace_period", "10s")) > shutdown_grace(routing),
          "stop_grace_period <= listen.shutdown_grace")
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    check(targets == [f"wsgate:{port_of(routing['admin']['address'])}"], f"Prometheus targets {targets}")
    check(mounts.get(("prometheus", "/etc/prometheus")) == "./deploy/prometheus", "prometheus config mount")
    provider_files = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/wsgate.yaml").read_text())
    dashboards_dir = provider_files["providers"][0]["options"]["path"]
    check(mounts.get(("grafana", f"{dashboards_dir}/wsgate.json")) == "./deploy/grafana/wsgate.json",
          "the dashboard is not mounted where the provisioning looks")
    check(mounts.get(("grafana", "/etc/grafana/provisioning")) == "./deploy/grafana/provisioning",
          "grafana provisioning mount")
    return stack


def docker(work):
    step("Dockerfile: the README's build command, the pinned toolchain, a complete build context")
    dockerfile = (DEPLOY / "docker/Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", dockerfile)
    pinned = re.search(r'^channel = "(.*)"', (ROOT / "rust-toolchain.toml").read_text(), re.M)[1]
    arg = re.search(r"^ARG RUST_VERSION=(\S+)", dockerfile, re.M)
    check(arg and arg[1] == pinned, f"ARG RUST_VERSION != rust-toolchain.toml's {pinned}")
    check(re.search(r"^FROM rust:\$\{RUST_VERSION\}", dockerfile, re.M), "the build stage is not FROM rust:${RUST_VERSION}")
    build = "cargo build --release --locked"
    check(any(build in line for line in joined.splitlines() if line.startswith("RUN ")),
          f"no RUN with `{build}`")
    check(build in (ROOT / "README.md").read_text(), f"README.md does not show `{build}`")
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    check(user and user[-1].split(":")[0] not in ("root", "0"), "the image runs as root")
    expose = {int(p) for line in re.findall(r"^EXPOSE (.*)", dockerfile, re.M) for p in line.split()}
    routing = yaml.safe_load((DEPLOY / "compose/wsgate.yaml").read_text())
    for key in ("listen", "admin"):
        check(port_of(routing[key]["address"]) in expose, f"EXPOSE lacks the {key} port")
    check(re.search(r"^HEALTHCHECK .*/healthz", joined, re.M), "no HEALTHCHECK on /healthz")
    # The build context after .dockerignore must hold a workspace that loads with --locked.
    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]

    def ignored(path):
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            parts = path.split("/")
            if any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
                verdict = not negated
        return verdict
    listed = run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"]).stdout.split()
    context = work / "docker-context"
    for path in listed:
        if not ignored(path) and (ROOT / path).is_file():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, context / path)
    for needed in ("Cargo.toml", "Cargo.lock", "rust-toolchain.toml"):
        check((context / needed).is_file(), f".dockerignore drops {needed}")
    # Cargo.lock satisfies the manifests (--locked) and every crate for this platform is
    # already fetched, as the build stage will fetch them.
    host = re.search(r"^host: (\S+)", run(["rustc", "-vV"]).stdout, re.M)[1]
    manifest = ["--manifest-path", str(context / "Cargo.toml")]
    fetch = run(["cargo", "fetch", "--locked", "--offline", "--target", host, *manifest], timeout=120)
    check(fetch.returncode == 0, f"cargo fetch --locked in the build context: {fetch.stderr[-500:]}")
    metadata = run(["cargo", "metadata", "--no-deps", "--format-version", "1", *manifest], timeout=120)
    if check(metadata.returncode == 0, f"cargo metadata in the build context: {metadata.stderr[-500:]}"):
        for package in json.loads(metadata.stdout)["packages"]:
            for target in package["targets"]:
                check(Path(target["src_path"]).is_file(), f"build context lacks {target['src_path']}")
        files = sum(1 for p in context.rglob("*") if p.is_file())
        print(f"   build context: {files} files; Cargo.lock holds (--locked), every target's source is there", flush=True)


def systemd(wsgate, work):
    step("systemd unit: hardening, reload by SIGHUP, systemd-analyze verify and security")
    unit = (DEPLOY / "systemd/wsgate.service").read_text()
    settings = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    want = {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes"}
    for key, value in want.items():
        check(settings.get(key) == [value], f"{key}={value} missing")
    check("DynamicUser" in settings or settings.get("User", ["root"])[0] != "root", "no DynamicUser= or User=")
    check(any("-HUP" in v and "$MAINPID" in v for v in settings.get("ExecReload", [])), "ExecReload does not send SIGHUP")
    caps = " ".join(settings.get("CapabilityBoundingSet", ["(unset)"])).split()
    check(set(caps) <= {"CAP_NET_BIND_SERVICE"}, f"CapabilityBoundingSet {caps}")
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    stop_timeout = duration(settings.get("TimeoutStopSec", ["90s"])[0])
    check(stop_timeout > shutdown_grace(example), "TimeoutStopSec <= listen.shutdown_grace")
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        print("   systemd-analyze not found: verify and security skipped", flush=True)
        return
    copy = work / "systemd" / "wsgate.service"
    copy.parent.mkdir()
    copy.write_text(unit.replace("/usr/local/bin/wsgate", str(wsgate)))
    verify = run([analyze, "verify", str(copy)])
    check(verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(),
          f"systemd-analyze verify: {verify.stdout}{verify.stderr}")
    security = run([analyze, "security", "--offline=yes", "--threshold=20", str(copy)])
    level = re.search(r"Overall exposure level for \S+: (\S+)", security.stdout)
    check(security.returncode == 0, f"systemd-analyze security: exposure {level and level[1]} above 2.0")
    print(f"   systemd-analyze verify clean; exposure level {level and level[1]}", flush=True)


def wsgate_check(wsgate, work, k8s_routing, token):
    step("wsgate check: config.example.yaml, the compose and the Kubernetes routing files")
    tls = work / "tls"
    made = run([str(wsgate), "self-signed", "--dir", str(tls)])
    check(made.returncode == 0, f"wsgate self-signed: {made.stderr}")
    sources = [("config.example.yaml", (ROOT / "config.example.yaml").read_text()),
               ("deploy/compose/wsgate.yaml", (DEPLOY / "compose/wsgate.yaml").read_text()),
               ("deploy/compose/fleet-wsgate.yaml", (DEPLOY / "compose/fleet-wsgate.yaml").read_text())]
    if k8s_routing:
        sources.append(("deploy/kubernetes/configmap.yaml (wsgate.yaml)", k8s_routing))
    env = dict(os.environ, WSGATE_ADMIN_TOKEN=token or "placeholder-admin-token-0123456789",
               # What deploy/compose/fleet.yml gives each instance.
               WSGATE_PUBLIC="127.0.0.1:8444", WSGATE_ADMIN="0.0.0.0:9091", WSGATE_INSTANCE="a")
    for name, text in sources:
        tls_files = yaml.safe_load(text)["listen"]["tls"]
        # Only the certificate paths change: they name files of the target machine.
        for key, generated in (("cert", "server.crt"), ("key", "server.key")):
            text = re.sub(rf"(\n\s+{key}: ){re.escape(tls_files[key])}", rf"\g<1>{tls / generated}", text, count=1)
        copy = work / ("check-" + re.sub(r"\W+", "-", name) + ".yaml")
        copy.write_text(text)
        result = run([str(wsgate), "check", "--config", str(copy)], env=env)
        if check(result.returncode == 0, f"wsgate check {name}: exit {result.returncode}\n{result.stderr}"):
            print(f"   {name}: {result.stdout.strip().split(': ', 1)[-1]}", flush=True)


def promtool_static(promtool):
    step("promtool: rules, rule unit tests, Prometheus configuration")
    for argv in (["check", "rules", "deploy/prometheus/alerts.yaml"],
                 ["test", "rules", "deploy/prometheus/alerts.test.yaml"],
                 ["check", "rules", "deploy/prometheus/alerts-fleet.yaml"],
                 ["test", "rules", "deploy/prometheus/alerts-fleet.test.yaml"],
                 ["check", "config", "deploy/prometheus/prometheus.yml"]):
        result = run([promtool, *argv], cwd=ROOT)
        if check(result.returncode == 0, f"promtool {' '.join(argv)}:\n{result.stdout}{result.stderr}"):
            print(f"   promtool {' '.join(argv)}: ok", flush=True)


# --- the demo, scraped and watched by a real Prometheus --------------------------------------

def start_demo(wsgate, logs):
    demo = start("demo", [str(wsgate), "demo"], logs, stdout=subprocess.PIPE)
    lines = []

    def read():
        for raw in demo.stdout:
            lines.append(raw.decode(errors="replace"))
    threading.Thread(target=read, daemon=True).start()
    wait_for("the demo's instructions", lambda: any("/metrics | grep" in l for l in lines), 60,
             [("wsgate demo", demo)])
    text = "".join(lines)
    (logs / "demo.out").write_text(text)
    found = {
        "proxy": re.search(r"^  proxy +wss://localhost:(\d+)(/\S*)", text, re.M),
        "admin": re.search(r"^  admin +http://([\d.]+:\d+)/metrics", text, re.M),
        "issuer": re.search(r"^  issuer +http://([\d.]+:\d+)/", text, re.M),
        "ca": re.search(r"--cacert (\S+)", text),
    }
    missing = [k for k, v in found.items() if not v]
    if missing:
        raise Failed(f"the demo's output lacks {missing}:\n{text}")
    return {"port": int(found["proxy"][1]), "path": found["proxy"][2], "admin": found["admin"][1],
            "issuer": found["issuer"][1], "ca": found["ca"][1]}


def demo_traffic(demo):
    """Refusals of several kinds and one more echo, on top of the demo's own self-check."""
    step(f"wsgate demo: an echo with an issuer token and refusals (401, 403, 404, 426) on :{demo['port']}")
    port, ca, path = demo["port"], demo["ca"], demo["path"]
    status, token, _ = http(f"http://{demo['issuer']}/token?sub=ci&ttl=60")
    check(status == 200 and token.count(".") == 2, f"the issuer's /token answered {status}")
    status, echoed = echo_through(port, ca, path, token, "hello from deploy/check")
    check(status == 101 and echoed == "hello from deploy/check", f"echo through the demo: {status} {echoed!r}")
    expected = [(None, 401), ({"Authorization": "Bearer not.a.token"}, 401),
                ({"Authorization": f"Bearer {token}", "Origin": "https://evil.example"}, 403)]
    for headers, want in expected:
        got = refusal(port, ca, path, headers)
        check(got == want, f"upgrade with {headers}: {got}, expected {want}")
    check(refusal(port, ca, "/nowhere") == 404, "an unrouted upgrade is not 404")
    check(refusal(port, ca, path, False) == 426, "a plain GET is not 426")


def exposition_names(text):
    """Sample names, and what each `# TYPE` line declares (a family without samples yet)."""
    samples, declared = set(), set()
    suffixes = {"counter": ["_total", ""], "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["", "_sum", "_count"], "info": ["_info"], "gauge": [""]}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            declared |= {name if name.endswith(s) else name + s for s in suffixes.get(kind, [""])}
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return samples, declared


def check_metrics(promtool, demo, logs):
    step("the demo's /metrics: promtool check metrics, and every name the dashboard and alerts use")
    status, text, headers = http(f"http://{demo['admin']}/metrics")
    if not check(status == 200, f"GET /metrics: {status}"):
        return
    (logs / "metrics.txt").write_text(text)
    lint = run([promtool, "check", "metrics"], input=text)
    if check(lint.returncode == 0, f"promtool check metrics:\n{lint.stdout}{lint.stderr}"):
        print(f"   promtool check metrics: ok ({headers.get('Content-Type')})", flush=True)
    samples, declared = exposition_names(text)
    used = {"dashboard": metric_names(e for _, e in dashboard_queries() if not FLEET_ONLY.search(e)),
            "alerts": metric_names(r["expr"] for r in alert_rules())}
    for where, names in used.items():
        absent = sorted(n for n in names if n not in samples | declared)
        for name in absent:
            check(False, f"{where} uses {name}, absent from the scrape")
        if not absent:
            print(f"   {where}: {len(names)} metric names, all in the scrape", flush=True)
    families = {re.sub(r"_(total|bucket|sum|count|info)$", "", n) for n in samples}
    shown = {re.sub(r"_(total|bucket|sum|count|info)$", "", n) for n in used["dashboard"]}
    print(f"   not on the dashboard: {sorted(families - shown) or 'nothing'}", flush=True)


def check_healthcheck(demo):
    step("the image's HEALTHCHECK command against the demo's admin listener")
    joined = re.sub(r"\\\n", " ", (DEPLOY / "docker/Dockerfile").read_text())
    argv = json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", joined, re.M)[1])
    host, port = demo["admin"].rsplit(":", 1)
    argv = [a.replace("127.0.0.1/9090", f"{host}/{port}") for a in argv]
    check(run(argv, timeout=10).returncode == 0, "HEALTHCHECK fails against a healthy instance")
    closed = [a.replace(f"{host}/{port}", f"127.0.0.1/{free_port()}") for a in argv]
    check(run(closed, timeout=10).returncode != 0, "HEALTHCHECK passes against a closed port")
    print("   healthy instance: pass; closed port: fail", flush=True)


def prometheus_query(base, query):
    status, body, _ = http(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    answer = json.loads(body) if body.startswith("{") else {}
    return status, answer


def check_prometheus(prometheus, demo, work, logs):
    step("a real Prometheus with deploy/prometheus/prometheus.yml scrapes the demo")
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str((DEPLOY / "prometheus" / f).resolve()) for f in config["rule_files"]]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [demo["admin"]]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start("prometheus", [prometheus, f"--config.file={work / 'prometheus.yml'}",
                                  f"--storage.tsdb.path={work / 'tsdb'}",
                                  f"--web.listen-address=127.0.0.1:{port}"], logs)
    procs = [("prometheus", server)]
    wait_for("Prometheus /-/ready", lambda: http(f"{base}/-/ready")[0] == 200, 30, procs)

    def scraped():
        _, answer = prometheus_query(base, 'count_over_time(up{job="wsgate"}[1m]) >= 4')
        return answer.get("data", {}).get("result")
    wait_for("4 scrapes of the demo", scraped, 30, procs)
    _, answer = prometheus_query(base, 'min_over_time(up{job="wsgate"}[1m])')
    check(answer["data"]["result"][0]["value"][1] == "1", "a scrape of the demo failed")
    time.sleep(2)  # two more rule evaluations on data
    _, body, _ = http(f"{base}/api/v1/rules")
    rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    check(len(rules) == len(shipped_rules()), f"{len(rules)} rules loaded, {len(shipped_rules())} shipped")
    for rule in rules:
        check(rule.get("health") == "ok", f"rule {rule['name']}: {rule.get('health')} {rule.get('lastError')}")
    for where, expr in dashboard_queries():
        label_values = re.fullmatch(r"label_values\((.*), *(\w+)\)", expr)
        if label_values:
            series, label = grafana_to_promql(label_values[1]), label_values[2]
            status, body, _ = http(f"{base}/api/v1/series?" + urllib.parse.urlencode({"match[]": series}))
            found = json.loads(body)["data"] if status == 200 else []
            check(any(label in s for s in found), f"{where}: no series {series} with label {label}")
            continue
        status, answer = prometheus_query(base, grafana_to_promql(expr))
        check(status == 200 and answer.get("status") == "success", f"{where}: {expr}: {answer.get('error')}")
        check(answer.get("data", {}).get("result") or FLEET_ONLY.search(expr),
              f"{where}: no data for {grafana_to_promql(expr)}")
    print(f"   {len(rules)} rules healthy; {len(dashboard_queries())} dashboard queries answered with data", flush=True)
    for rule in alert_rules():
        status, answer = prometheus_query(base, rule["expr"])
        check(status == 200 and answer.get("status") == "success", f"alert {rule['alert']}: {answer.get('error')}")
    _, body, _ = http(f"{base}/api/v1/alerts")
    active = [(a["labels"]["alertname"], a["state"]) for a in json.loads(body)["data"]["alerts"]]
    check(not active, f"alerts active against a healthy demo: {active}")
    print("   no alert pending or firing against the healthy demo", flush=True)
    stop(server)


# --- the compose services, run natively -------------------------------------------------------

def compose_natively(wsgate, stack, work, logs):
    step("the compose services' commands, natively on free loopback ports")
    services = stack["services"]
    wsgate_service = services["wsgate"]
    container_ports = {int(p.rsplit(":", 1)[1]) for p in wsgate_service["ports"]}
    container_ports.add(port_of(services["echo"]["command"][services["echo"]["command"].index("--listen") + 1]))
    ports = {old: free_port() for old in sorted(container_ports)}
    paths = {}
    for name in ("certs", "wsgate"):
        for volume in services[name].get("volumes", []):
            source, target = volume.split(":")[:2]
            host = work / "compose" / target.strip("/").replace("/", "_")
            if host.exists():
                paths[target] = host
                continue
            if source.startswith("./"):
                shutil.copytree(ROOT / source, host)
            else:
                host.mkdir(parents=True)
            paths[target] = host

    def local(text):
        for target, host in paths.items():
            text = text.replace(target, str(host))
        text = re.sub(r":(\d+)\b", lambda m: f":{ports.get(int(m[1]), m[1])}", text)
        return text.replace("0.0.0.0", "127.0.0.1")
    for host in paths.values():
        for file in host.glob("*.yaml"):
            file.write_text(local(file.read_text()))

    def argv(name):
        return [str(wsgate)] + [local(a) for a in services[name]["command"]]
    env = dict(os.environ)
    for key, value in wsgate_service.get("environment", {}).items():
        env[key] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
    certs = run(argv("certs"), timeout=30)
    if not check(certs.returncode == 0, f"certs: {certs.stderr}"):
        return
    proxy = start("compose-wsgate", argv("wsgate"), logs, env=env)
    issuer = start("compose-issuer", argv("issuer"), logs)
    start("compose-echo", argv("echo"), logs)
    admin = f"127.0.0.1:{ports[9090]}"
    wait_for("the compose wsgate's /readyz", lambda: http(f"http://{admin}/readyz")[0] == 200, 30,
             [("wsgate", proxy), ("issuer", issuer)])
    print(f"   ready; ports {ports}", flush=True)
    issuer_url = f"http://127.0.0.1:{ports[8080]}"
    status, page, _ = http(f"{issuer_url}/")
    check(status == 200 and f"wss://localhost:{ports[8443]}/echo" in page, "the issuer's page does not open the proxy's /echo")
    status, token, _ = http(f"{issuer_url}/token?sub=compose&ttl=60")
    ca = paths["/etc/wsgate/tls"] / "server.crt"
    status, echoed = echo_through(ports[8443], ca, "/echo", token, "hello compose")
    check(status == 101 and echoed == "hello compose", f"echo through the compose stack: {status} {echoed!r}")
    check(refusal(ports[8443], ca, "/echo") == 401, "no token is not 401")
    check(refusal(ports[8443], ca, "/echo", {"Origin": f"http://localhost:{ports[8080]}"}) == 401,
          "the page's Origin is not admitted (expected the token check's 401)")
    admin_token = env["WSGATE_ADMIN_TOKEN"]
    status, _, _ = http(f"http://{admin}/admin/sessions", {"Authorization": f"Bearer {admin_token}"})
    check(status == 200, f"GET /admin/sessions with the compose admin token: {status}")
    os.kill(proxy.pid, signal.SIGHUP)

    def reloaded():
        text = http(f"http://{admin}/metrics")[1]
        return re.search(r'^wsgate_config_reloads_total\{result="ok"\} [1-9]', text, re.M)
    wait_for("a SIGHUP reload counted", reloaded, 10, [("wsgate", proxy)])
    grace = duration(wsgate_service.get("stop_grace_period", "10s"))
    started = time.monotonic()
    code = stop(proxy, signal.SIGTERM, timeout=grace)
    check(code == 0, f"SIGTERM: exit {code} (expected 0 within stop_grace_period {grace}s)")
    print(f"   token, 101 and echo, 401, admin API, SIGHUP reload; SIGTERM exit {code} in "
          f"{time.monotonic() - started:.1f}s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wsgate", required=True, type=Path)
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--prometheus", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="wsgate-deploy-check-"))
    logs = work / "logs"
    logs.mkdir()
    try:
        check_parse()
        k8s_routing, token = kubernetes()
        stack = compose()
        docker(work)
        systemd(args.wsgate.resolve(), work)
        wsgate_check(args.wsgate, work, k8s_routing, token)
        promtool_static(args.promtool)
        end_phase("static checks")
        demo = start_demo(args.wsgate, logs)
        demo_traffic(demo)
        check_metrics(args.promtool, demo, logs)
        check_healthcheck(demo)
        check_prometheus(args.prometheus, demo, work, logs)
        end_phase("demo checks")
        stop_all()
        PROCS.clear()
        compose_natively(args.wsgate, stack, work, logs)
        end_phase("compose checks")
    except (Failed, OSError, subprocess.SubprocessError, KeyError, ValueError) as error:
        print(f"deploy/check: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"deploy/check: logs of the processes in {logs}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    shutil.rmtree(work, ignore_errors=True)
    print(f"deploy/check: all passed in {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
