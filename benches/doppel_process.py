"""Starting a doppel for a benchmark or a browser test: a free port on loopback, a fresh
data folder, and a wait until it answers. Shared by benches/*.py and tests/browser/*.py
(which put this folder on their path)."""

import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(doppel, command, extra, within=30):
    """`doppel COMMAND --data FRESH --listen 127.0.0.1:PORT EXTRA...`, once it answers
    (a 401 counts: a server with a token answers too); (process, url)."""
    data = tempfile.mkdtemp(prefix="doppel-")
    port = free_port()
    proc = subprocess.Popen(
        [doppel, command, "--data", data, "--listen", f"127.0.0.1:{port}", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "DOPPEL_LOG": "warn"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/ping", timeout=1)
            return proc, url
        except urllib.error.HTTPError:
            return proc, url
        except Exception:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"doppel {command} did not answer within {within} s")


def ingest(doppel, url):
    """`doppel bench ingest` (4 clients x 40 batches x 5,000 lines) into URL: lines/s."""
    out = subprocess.run(
        [doppel, "bench", "ingest", "--url", url, "--clients", "4", "--batches", "40"],
        capture_output=True, text=True, check=True,
    )
    said = out.stdout + out.stderr
    match = re.search(r"([\d.]+)\s*([kM]?) ?lines/s", said)
    if not match:
        raise SystemExit("no lines/s in: " + said)
    return float(match.group(1)) * {"": 1, "k": 1e3, "M": 1e6}[match.group(2)]
