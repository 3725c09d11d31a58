#!/usr/bin/env python3
"""Forward a local port to a Kubernetes service through kforward's C API, with ctypes.

Usage: forward.py KUBECONFIG [SERVICE [NAMESPACE [REMOTE_PORT]]]   (defaults: web demo 80)

The library is $KFORWARD_LIB, else target/debug/libkforward_ffi.so under the workspace
(build it with `cargo build -p kforward-ffi`).
"""

import ctypes
import json
import os
import socket
import sys
import threading
from pathlib import Path

KF_OK = 0


def load_library():
    default = Path(__file__).resolve().parents[2] / "target" / "debug" / "libkforward_ffi.so"
    lib = ctypes.CDLL(os.environ.get("KFORWARD_LIB", str(default)))
    p = ctypes.c_void_p
    lib.kf_version.restype = ctypes.c_char_p
    lib.kf_version.argtypes = []
    lib.kf_result_name.restype = ctypes.c_char_p
    lib.kf_result_name.argtypes = [ctypes.c_int]
    lib.kf_last_error_message.restype = ctypes.c_int
    lib.kf_last_error_message.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    lib.kf_string_free.restype = None
    lib.kf_string_free.argtypes = [p]
    lib.kf_runtime_new.restype = ctypes.c_int
    lib.kf_runtime_new.argtypes = [ctypes.c_uint32, ctypes.POINTER(p)]
    lib.kf_runtime_free.restype = None
    lib.kf_runtime_free.argtypes = [p]
    lib.kf_forward_start.restype = ctypes.c_int
    lib.kf_forward_start.argtypes = [p, ctypes.c_char_p, EVENT_CALLBACK, p, ctypes.POINTER(p)]
    lib.kf_forward_wait_ready.restype = ctypes.c_int
    lib.kf_forward_wait_ready.argtypes = [p, ctypes.c_uint32]
    lib.kf_forward_status.restype = ctypes.c_int
    lib.kf_forward_status.argtypes = [p, ctypes.POINTER(p)]
    lib.kf_forward_stop.restype = ctypes.c_int
    lib.kf_forward_stop.argtypes = [p]
    lib.kf_forward_free.restype = None
    lib.kf_forward_free.argtypes = [p]
    return lib


# void (*kf_event_callback)(void *userdata, const char *event_json)
EVENT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)


class KforwardError(Exception):
    pass


def check(lib, what, code):
    """Raises with the name and message of a failed call (read on the calling thread)."""
    if code == KF_OK:
        return
    size = ctypes.c_size_t(0)
    lib.kf_last_error_message(None, 0, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value + 1)
    lib.kf_last_error_message(buf, len(buf), ctypes.byref(size))
    name = lib.kf_result_name(code).decode()
    raise KforwardError(f"{what} failed: {name}: {buf.value.decode()}")


def status(lib, fwd):
    out = ctypes.c_void_p()
    check(lib, "kf_forward_status", lib.kf_forward_status(fwd, ctypes.byref(out)))
    try:
        return json.loads(ctypes.string_at(out.value).decode())
    finally:
        lib.kf_string_free(out)


def http_get(host, port):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    text = reply.decode()
    if not text.startswith("HTTP/1.1 200"):
        raise KforwardError(f"unexpected reply: {text!r}")
    return text.split("\r\n\r\n", 1)[1]


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    kubeconfig = argv[1]
    service = argv[2] if len(argv) > 2 else "web"
    namespace = argv[3] if len(argv) > 3 else "demo"
    remote_port = int(argv[4]) if len(argv) > 4 else 80
    lib = load_library()
    print("kforward", lib.kf_version().decode())

    # The callback runs on a kforward worker thread; ctypes takes the GIL for it.
    events = []
    ready = threading.Event()
    stopped = threading.Event()

    def on_event(_userdata, event_json):
        event = json.loads(event_json.decode())
        events.append(event)
        print("event:", event, file=sys.stderr)
        if event["event"] == "ready":
            ready.set()
        elif event["event"] == "stopped":
            stopped.set()

    callback = EVENT_CALLBACK(on_event)  # keep a reference while the forward lives

    config = json.dumps({
        "service": service,
        "namespace": namespace,
        "local_port": 0,
        "remote_port": remote_port,
        "kubeconfig": kubeconfig,
        "alias": "python-example",
    })
    rt = ctypes.c_void_p()
    fwd = ctypes.c_void_p()
    check(lib, "kf_runtime_new", lib.kf_runtime_new(2, ctypes.byref(rt)))
    try:
        check(lib, "kf_forward_start",
              lib.kf_forward_start(rt, config.encode(), callback, None, ctypes.byref(fwd)))
        # Wait for the ready event; the status says ready before the event is sent.
        if not ready.wait(timeout=30):
            check(lib, "kf_forward_wait_ready", lib.kf_forward_wait_ready(fwd, 0))
            raise KforwardError("no ready event in 30 s")
        host, port = status(lib, fwd)["local_addrs"][0].rsplit(":", 1)
        print(f"forwarding {host}:{port} -> svc/{service}:{remote_port}")
        print("body:", http_get(host, int(port)))
        print("status:", json.dumps(status(lib, fwd)))
        check(lib, "kf_forward_stop", lib.kf_forward_stop(fwd))
        if not stopped.is_set():
            raise KforwardError("no stopped event after kf_forward_stop")
        print("final state:", status(lib, fwd)["state"])
        print("events:", len(events))
    finally:
        lib.kf_forward_free(fwd)
        lib.kf_runtime_free(rt)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KforwardError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
