#!/usr/bin/env python3
"""How fast a running query lets go of the CPU, and how /ping fares meanwhile.

Starts `doppel serve` on a scratch directory, writes 20,000 rows of one series, sends a query
that would run for hours (a three-way self-join on the one tag value: 8 * 10^12 rows), and
measures, from /proc:
  - after the client hangs up: the time until the server's CPU use falls under 10 % of a core;
  - with --query-timeout 2s: when the 400 arrives and when the CPU falls quiet;
  - /ping round trips while the query runs (p50, p99, max).

Usage: python3 benches/query_cancel.py [path/to/doppel] [runs]
"""
import json, os, socket, subprocess, sys, tempfile, time, urllib.request

DOPPEL = sys.argv[1] if len(sys.argv) > 1 else "target/release/doppel"
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
QUERY = "SELECT count(*) FROM m x JOIN m y ON x.a = y.a JOIN m z ON y.a = z.a"
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data, extra):
    port = free_port()
    proc = subprocess.Popen([DOPPEL, "serve", "--data", data, "--listen", f"127.0.0.1:{port}", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "DOPPEL_LOG": "error"})
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("doppel did not start")


def write_rows(port):
    body = "".join(f"m,a=x v={t} {1_700_000_000 + t}\n" for t in range(20_000)).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/write?bucket=plant&precision=s", data=body, method="POST")
    urllib.request.urlopen(req).read()


def send_query(port):
    body = json.dumps({"db": "plant", "q": QUERY}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/v3/query_sql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def until_quiet(pid, since):
    """Seconds from `since` until a 100 ms window uses under 10 % of a core."""
    while time.time() - since < 120:
        a, t = cpu(pid), time.time()
        time.sleep(0.1)
        if (cpu(pid) - a) / (time.time() - t) < 0.1:
            return t - since
    return float("inf")


def pings(port, n=50):
    out = []
    for _ in range(n):
        t = time.time()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ping").read()
        out.append((time.time() - t) * 1000)
        time.sleep(0.02)
    out.sort()
    return out[len(out) // 2], out[int(len(out) * 0.99) - 1], out[-1]


def main():
    hangup, timeout_answer, timeout_quiet, ping = [], [], [], []
    with tempfile.TemporaryDirectory() as data:
        proc, port = start(data, ["--query-timeout", "10m"])
        write_rows(port)
        for _ in range(RUNS):
            s = send_query(port)
            time.sleep(2)
            ping.append(pings(port))
            s.close()
            hangup.append(until_quiet(proc.pid, time.time()))
        proc.terminate(); proc.wait()
        proc, port = start(data, ["--query-timeout", "2s"])
        for _ in range(RUNS):
            t = time.time()
            s = send_query(port)
            s.recv(65536)
            answered = time.time() - t
            timeout_answer.append(answered)
            timeout_quiet.append(until_quiet(proc.pid, t + 2.0))
            s.close()
        proc.terminate(); proc.wait()
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    print(f"after the client hangs up, CPU quiet within (s): {fmt(hangup)}")
    print(f"--query-timeout 2s: answered after (s): {fmt(timeout_answer)}; CPU quiet after the limit (s): {fmt(timeout_quiet)}")
    print("/ping while the query runs, p50/p99/max ms: " + "; ".join(f"{a:.1f}/{b:.1f}/{c:.1f}" for a, b, c in ping))


main()
