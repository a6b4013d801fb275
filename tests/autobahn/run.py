#!/usr/bin/env python3
"""The Autobahn fuzzing client (kosoku) against wsgate in front of its echo backend.
Run through tests/autobahn/run.sh, which installs socat and kosoku and builds wsgate.

  kosoku (plain ws) -> socat (TLS client, verifies the certificate) -> wsgate run
      (route /autobahn, token in ?access_token=) -> wsgate echo (plain ws)

Every process binds 127.0.0.1:0 and prints the address it got (socat -d -d, wsgate's JSON
logs); nothing uses a fixed port. Before the fuzzing run, two handshakes through the same
path check the set-up: no token is 401, and an offer of permessage-deflate gets a 101 with no
Sec-WebSocket-Extensions (compression declined cleanly). After it, every case must end with
behavior and behaviorClose OK, NON-STRICT or INFORMATIONAL; the failures are listed with what
the case expected and what it saw, and the exit code is 1.
"""

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
# Categories 12 and 13 are permessage-deflate, which wsgate declines. The suite has no 8 or 11.
CATEGORIES = ["1", "2", "3", "4", "5", "6", "7", "9", "10"]
PROCS = []  # (name, Popen), stopped in reverse order by stop_all()


class Failed(Exception):
    pass


def step(text):
    print(f"== {text}", flush=True)


# --- processes ------------------------------------------------------------------------------

def start(name, argv, logs, env=None):
    log = open(logs / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            start_new_session=True)
    PROCS.append((name, proc))
    return proc


def stop_all():
    for _, proc in reversed(PROCS):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for _, proc in reversed(PROCS):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def wait_for(what, probe, proc, timeout=30):
    """Polls `probe` (bounded) until it returns a value; fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        if proc.poll() is not None:
            raise Failed(f"{what}: the process exited with {proc.returncode} (see its log)")
        time.sleep(0.05)
    raise Failed(f"timed out after {timeout}s waiting for {what}")


def logged(path, pattern):
    """A probe: the first match of `pattern` in the log file, else None."""
    def probe():
        found = re.search(pattern, path.read_text(errors="replace"))
        return found.groups() if found else None
    return probe


def json_field(path, field):
    """A probe: `field` of the first JSON log event that has it (the bound address)."""
    def probe():
        for line in path.read_text(errors="replace").splitlines():
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if field in fields:
                return fields[field]
        return None
    return probe


def http_get(url):
    assert url.startswith("http://127.0.0.1:"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except OSError:
        return None, ""


# --- the parts --------------------------------------------------------------------------------

def start_stack(wsgate, socat, config, work):
    logs, certs = work / "logs", work / "certs"
    logs.mkdir(parents=True, exist_ok=True)
    subprocess.run([wsgate, "self-signed", "--dir", str(certs)], check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    json_logs = [wsgate, "--log-format", "json"]
    echo = start("echo", json_logs + ["echo", "--listen", "127.0.0.1:0"], logs)
    echo_addr = wait_for("the echo backend's address",
                         json_field(logs / "echo.log", "address"), echo)
    issuer = start("issuer", json_logs + ["issuer", "--listen", "127.0.0.1:0", "--issuer", "wsgate-autobahn",
                                          "--audience", "autobahn"], logs)
    issuer_addr = wait_for("the issuer's address", json_field(logs / "issuer.log", "address"), issuer)

    env = dict(os.environ, AB_CERT_DIR=str(certs), AB_ECHO=echo_addr,
               AB_JWKS_URL=f"http://{issuer_addr}/.well-known/jwks.json")
    proxy = start("wsgate", json_logs + ["run", "--config", str(config)], logs, env=env)
    proxy_addr = wait_for("wsgate's address", json_field(logs / "wsgate.log", "address"), proxy)
    admin_addr = wait_for("wsgate's admin address", json_field(logs / "wsgate.log", "admin"), proxy)
    wait_for("wsgate /readyz (keys fetched)", lambda: http_get(f"http://{admin_addr}/readyz")[0] == 200, proxy)

    status, token = http_get(f"http://{issuer_addr}/token?sub=autobahn&ttl=3600")
    if status != 200 or token.count(".") != 2:
        raise Failed(f"the issuer's /token answered {status}")

    # socat's OPENSSL address verifies the peer by default: trust exactly the proxy's certificate.
    # No SNI: the runner's Host is 127.0.0.1, and wsgate answers 421 when SNI and Host differ.
    wrapper = start("socat", [socat, "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,reuseaddr,fork",
                              f"OPENSSL:{proxy_addr},cafile={certs / 'server.crt'},"
                              "commonname=localhost,no-sni=1"], logs)
    (wrapper_port,) = wait_for("socat's port", logged(logs / "socat.log", r"listening on .*:(\d+)\s"), wrapper)
    return {"wrapper": f"127.0.0.1:{wrapper_port}", "token": token, "admin": admin_addr, "logs": logs}


def handshake(addr, path, extra=()):
    """One upgrade request through the plain side of the wrapper: (status, headers)."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {addr}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *extra]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        text = head.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
        first, *rest = text.split("\r\n")
        status = int(first.split(" ")[1]) if first.startswith("HTTP/1.1 ") else None
        headers = {}
        for line in rest:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if status == 101:  # leave politely: a masked close frame, 1000
            sock.sendall(bytes([0x88, 0x82, 0, 0, 0, 0]) + (1000).to_bytes(2, "big"))
        return status, headers


def check_handshakes(stack):
    step("handshakes through the TLS wrapper: no token is refused, permessage-deflate is declined")
    status, headers = handshake(stack["wrapper"], "/autobahn")
    if status != 401:
        raise Failed(f"an upgrade without a token answered {status}, not 401")
    status, headers = handshake(stack["wrapper"], f"/autobahn?access_token={stack['token']}",
                                ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
    if status != 101:
        raise Failed(f"an upgrade offering permessage-deflate answered {status}, not 101")
    if "sec-websocket-extensions" in headers:
        raise Failed(f"permessage-deflate was not declined: {headers['sec-websocket-extensions']}")
    print("   401 without a token; 101 without Sec-WebSocket-Extensions for a permessage-deflate offer")


def run_cases(kosoku, stack, report, cases, timeout):
    step(f"kosoku fuzzingclient, cases {' '.join(cases)}, through {stack['wrapper']}")
    url = f"ws://{stack['wrapper']}/autobahn?access_token={stack['token']}"
    argv = [kosoku, url, "-o", str(report)]
    for case in cases:
        argv += ["-i", case]
    began = time.monotonic()
    # Its own exit code says whether a case failed; the report below says which and why.
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - began
    (report / "kosoku.log").write_text(done.stdout + done.stderr)
    if not (report / "index.json").is_file():
        sys.stdout.write(done.stdout + done.stderr)
        raise Failed(f"kosoku exited with {done.returncode} and wrote no report")
    return took


def check_sessions(stack, ran):
    """The cases really went through the proxy: one accepted handshake per case at least."""
    status, text = http_get(f"http://{stack['admin']}/metrics")
    found = re.search(r'^wsgate_handshakes_total\{route="autobahn",result="ok"\} (\d+)', text, re.M)
    accepted = int(found[1]) if status == 200 and found else None
    print(f"   wsgate accepted {accepted} sessions on the route (cases run: {ran}, plus 1 handshake check)")
    if accepted is None or accepted < ran + 1:
        return [f"wsgate_handshakes_total{{route=\"autobahn\",result=\"ok\"}} is {accepted}, "
                f"expected at least {ran + 1}: did the cases go through wsgate?"]
    return []


# --- the report -------------------------------------------------------------------------------

def category(case_id):
    return case_id.split(".", 1)[0]


def id_key(case_id):
    return [int(part) for part in case_id.split(".")]


def judge(report, took, categories):
    index = json.loads((report / "index.json").read_text())
    results = {case_id: entry for agent in index.values() for case_id, entry in agent.items()}
    failing = sorted((c for c, e in results.items()
                      if e["behavior"] not in PASSING or e["behaviorClose"] not in PASSING), key=id_key)

    step(f"results ({report / 'index.html'})")
    print(f"   {'category':<9} {'run':>5} {'passed':>7} {'seconds':>8}")
    for cat in categories:
        mine = [c for c in results if category(c) == cat]
        passed = sum(1 for c in mine if c not in failing)
        seconds = sum(results[c]["duration"] for c in mine) / 1000
        print(f"   {cat:<9} {len(mine):>5} {passed:>7} {seconds:>8.1f}")
    behaviors = {}
    for entry in results.values():
        key = f"{entry['behavior']}/{entry['behaviorClose']}"
        behaviors[key] = behaviors.get(key, 0) + 1
    print("   verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(behaviors.items())))
    print(f"   wall time of the fuzzing run: {took:.1f} s")

    problems = []
    empty = [cat for cat in categories if not any(category(c) == cat for c in results)]
    if empty:
        problems.append(f"no case ran in categories {', '.join(empty)}")
    for case_id in failing:
        entry = results[case_id]
        detail = json.loads((report / entry["reportfile"]).read_text())
        problems.append(describe(case_id, detail))
    return len(results), len(results) - len(failing), problems


def describe(case_id, d):
    expected = "; ".join(f"{verdict}: {short(events)}" for verdict, events in d.get("expected", {}).items())
    return "\n".join([
        f"{case_id}  behavior={d['behavior']} behaviorClose={d['behaviorClose']}",
        f"      case:      {d['description'].strip()}",
        f"      expects:   {d['expectation'].strip()}",
        f"      expected:  {expected}",
        f"      received:  {short(d.get('received', []))}",
        f"      result:    {d.get('result', '')} / {d.get('resultClose', '')}",
        f"      close:     remote {d.get('remoteCloseCode')} {d.get('remoteCloseReason')!r}, "
        f"local {d.get('localCloseCode')}, clean={d.get('wasClean')} ({d.get('wasNotCleanReason')}), "
        f"expected {short(d.get('expectedClose', {}))}",
    ])


def short(value, limit=300):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the wsgate binary")
    parser.add_argument("--socat", default="socat")
    parser.add_argument("--kosoku", required=True, help="the kosoku command")
    parser.add_argument("--work", required=True, help="directory for certificates, logs and the report")
    parser.add_argument("--config", default=str(HERE / "wsgate.yaml"),
                        help="routing file (default: %(default)s; it is given AB_CERT_DIR, AB_ECHO, AB_JWKS_URL)")
    parser.add_argument("--cases", nargs="+", default=[f"{c}.*" for c in CATEGORIES],
                        help="case ids or globs (default: categories %(default)s)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds for the fuzzing run")
    args = parser.parse_args()

    work = Path(args.work).resolve()
    report = work / "report"
    if report.exists():
        for old in report.iterdir():
            old.unlink()
    report.mkdir(parents=True, exist_ok=True)
    categories = sorted({category(c) for c in args.cases}, key=int)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack = start_stack(args.bin, args.socat, Path(args.config).resolve(), work)
        check_handshakes(stack)
        took = run_cases(args.kosoku, stack, report, args.cases, args.timeout)
        ran, passed, problems = judge(report, took, categories)
        problems += check_sessions(stack, ran)
    except (Failed, subprocess.SubprocessError) as error:
        print(f"tests/autobahn: {error}\n   logs: {work / 'logs'}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    for problem in problems:
        print(f"   FAIL {problem}")
    print(f"autobahn: {passed} passed, {ran - passed} failed")
    if problems:
        print(f"tests/autobahn: {len(problems)} problem(s), listed above; report: {report / 'index.html'}, "
              f"logs: {work / 'logs'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
