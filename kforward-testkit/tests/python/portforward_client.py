#!/usr/bin/env python3
"""Port-forwards to a web pod of a kforward testkit cluster with the official Kubernetes client.

Usage: portforward_client.py KUBECONFIG [NAMESPACE]

Lists the pods of the namespace, port-forwards to the first `app=web` pod's port 8080 over
the WebSocket channel protocol, sends one HTTP GET and prints what came back. Prints
`pods: ...`, `forwarded-to: NAME` and `reply-body: BODY`; exits non-zero on any failure.
"""

import socket
import sys

from kubernetes import client, config
from kubernetes.stream import portforward

TIMEOUT_SECONDS = 15


def read_http_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length body; returns (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed inside the response head: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise RuntimeError(f"response without Content-Length: {head!r}")
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed inside the body: {body!r}")
        body += chunk
    return head.decode(), body[:length].decode()


def main():
    kubeconfig = sys.argv[1]
    namespace = sys.argv[2] if len(sys.argv) > 2 else "demo"
    config.load_kube_config(config_file=kubeconfig)
    api = client.CoreV1Api()

    pods = api.list_namespaced_pod(namespace)
    print("pods:", " ".join(sorted(p.metadata.name for p in pods.items)), flush=True)
    web = sorted(
        p.metadata.name
        for p in api.list_namespaced_pod(namespace, label_selector="app=web").items
    )
    if not web:
        raise RuntimeError("no app=web pod")
    name = web[0]

    pf = portforward(
        api.connect_get_namespaced_pod_portforward, name, namespace, ports="8080"
    )
    sock = pf.socket(8080)
    sock.settimeout(TIMEOUT_SECONDS)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
    head, body = read_http_response(sock)
    status_line = head.split("\r\n", 1)[0]
    print("forwarded-to:", name, flush=True)
    print("status:", status_line, flush=True)
    print("reply-body:", body.strip(), flush=True)
    error = pf.error(8080)
    if error:
        raise RuntimeError(f"error channel of port 8080: {error}")
    sock.close()
    pf.close()


if __name__ == "__main__":
    try:
        main()
    except socket.timeout:
        print("error: timed out talking to the pod", file=sys.stderr)
        sys.exit(2)
