/*
 * forward.c: forward a local port to a Kubernetes service through kforward's C API,
 * fetch a page through it, print the forward's status, and clean up.
 *
 * Usage: forward KUBECONFIG [SERVICE [NAMESPACE [REMOTE_PORT]]]
 *        (defaults: web demo 80; KFORWARD_KUBECONFIG may stand in for KUBECONFIG)
 *
 * Build (from the workspace root, after `cargo build -p kforward-ffi`):
 *   cc -Wall -Wextra -Werror -Ikforward-ffi/include examples/c/forward.c \
 *      -Ltarget/debug -lkforward_ffi -Wl,-rpath,"$PWD/target/debug" -o forward
 * or statically:
 *   cc -Wall -Wextra -Werror -Ikforward-ffi/include examples/c/forward.c \
 *      target/debug/libkforward_ffi.a -lpthread -ldl -lm -o forward
 *
 * Try it against the built-in simulated cluster:
 *   cargo run -p kforward-testkit -- serve --scenario demo --kubeconfig-out /tmp/demo.kubeconfig
 *   ./forward /tmp/demo.kubeconfig
 */

#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "kforward.h"

/* What the event callback shares with main: it runs on a runtime worker thread. */
struct events {
    atomic_int count;
    atomic_int ready;
    atomic_int stopped;
};

/* Called on a kforward worker thread with each event of the forward, one at a time. */
static void on_event(void *userdata, const char *event_json) {
    struct events *ev = userdata;
    atomic_fetch_add(&ev->count, 1);
    if (strstr(event_json, "\"event\":\"ready\"") != NULL) {
        atomic_store(&ev->ready, 1);
    } else if (strstr(event_json, "\"event\":\"stopped\"") != NULL) {
        atomic_store(&ev->stopped, 1);
    }
    fprintf(stderr, "event: %s\n", event_json);
}

/* Prints the last error of this thread after `what` failed with `code`. */
static void report(const char *what, kf_result code) {
    char message[1024];
    size_t len = 0;
    if (kf_last_error_message(message, sizeof message, &len) != KF_OK) {
        snprintf(message, sizeof message, "(message too long)");
    }
    fprintf(stderr, "%s failed: %s: %s\n", what, kf_result_name((int)code), message);
}

/* Writes `s` as a JSON string (with quotes) into `out`; returns 0 when it does not fit. */
static int json_string(char *out, size_t cap, const char *s) {
    size_t n = 0;
    if (cap < 3) {
        return 0;
    }
    out[n++] = '"';
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        size_t k;
        if (c == '"' || c == '\\') {
            snprintf(esc, sizeof esc, "\\%c", c);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
        } else {
            esc[0] = (char)c;
            esc[1] = '\0';
        }
        k = strlen(esc);
        if (n + k + 2 > cap) {
            return 0;
        }
        memcpy(out + n, esc, k);
        n += k;
    }
    out[n++] = '"';
    out[n] = '\0';
    return 1;
}

/* Finds the first local address ("127.0.0.1:PORT") in a status JSON. */
static int first_local_addr(const char *status, char *host, size_t host_cap, int *port) {
    const char *key = "\"local_addrs\":[\"";
    const char *start = strstr(status, key);
    const char *end;
    const char *colon;
    size_t len;
    if (start == NULL) {
        return 0;
    }
    start += strlen(key);
    end = strchr(start, '"');
    if (end == NULL) {
        return 0;
    }
    colon = end;
    while (colon > start && *colon != ':') {
        colon--;
    }
    len = (size_t)(colon - start);
    if (colon == start || len + 1 > host_cap) {
        return 0;
    }
    memcpy(host, start, len);
    host[len] = '\0';
    *port = atoi(colon + 1);
    return *port > 0;
}

/* GET / through the forward with a plain socket; prints the reply's body. */
static int http_get(const char *host, int port) {
    struct sockaddr_in addr;
    struct timeval timeout = {10, 0};
    const char *request = "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";
    char reply[8192];
    size_t got = 0;
    ssize_t n;
    const char *body;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("socket");
        return 0;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        close(fd);
        return 0;
    }
    if (send(fd, request, strlen(request), 0) != (ssize_t)strlen(request)) {
        perror("send");
        close(fd);
        return 0;
    }
    while (got + 1 < sizeof reply && (n = recv(fd, reply + got, sizeof reply - 1 - got, 0)) > 0) {
        got += (size_t)n;
    }
    close(fd);
    reply[got] = '\0';
    if (strncmp(reply, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "unexpected reply: %s\n", reply);
        return 0;
    }
    body = strstr(reply, "\r\n\r\n");
    printf("body: %s\n", body != NULL ? body + 4 : "");
    return 1;
}

int main(int argc, char **argv) {
    const char *kubeconfig = argc > 1 ? argv[1] : getenv("KFORWARD_KUBECONFIG");
    const char *service = argc > 2 ? argv[2] : "web";
    const char *namespace = argc > 3 ? argv[3] : "demo";
    int remote_port = argc > 4 ? atoi(argv[4]) : 80;
    char kubeconfig_json[2048], service_json[512], namespace_json[512], config[4096];
    char host[64];
    int port = 0;
    int ok = 0;
    char *status = NULL;
    kf_runtime *rt = NULL;
    kf_forward *fwd = NULL;
    struct events ev;
    kf_result r;

    atomic_init(&ev.count, 0);
    atomic_init(&ev.ready, 0);
    atomic_init(&ev.stopped, 0);
    if (kubeconfig == NULL) {
        fprintf(stderr, "usage: %s KUBECONFIG [SERVICE [NAMESPACE [REMOTE_PORT]]]\n", argv[0]);
        return 2;
    }
    if (!json_string(kubeconfig_json, sizeof kubeconfig_json, kubeconfig) ||
        !json_string(service_json, sizeof service_json, service) ||
        !json_string(namespace_json, sizeof namespace_json, namespace)) {
        fprintf(stderr, "arguments too long\n");
        return 2;
    }
    snprintf(config, sizeof config,
             "{\"service\":%s,\"namespace\":%s,\"local_port\":0,\"remote_port\":%d,"
             "\"kubeconfig\":%s,\"alias\":\"c-example\"}",
             service_json, namespace_json, remote_port, kubeconfig_json);
    printf("kforward %s\n", kf_version());

    if ((r = kf_runtime_new(2, &rt)) != KF_OK) {
        report("kf_runtime_new", r);
        return 1;
    }
    if ((r = kf_forward_start(rt, config, on_event, &ev, &fwd)) != KF_OK) {
        report("kf_forward_start", r);
        goto done;
    }
    if ((r = kf_forward_wait_ready(fwd, 30000)) != KF_OK) {
        report("kf_forward_wait_ready", r);
        goto done;
    }
    /* The ready event comes after the status says ready; both are there by now or soon. */
    if ((r = kf_forward_status(fwd, &status)) != KF_OK) {
        report("kf_forward_status", r);
        goto done;
    }
    if (!first_local_addr(status, host, sizeof host, &port)) {
        fprintf(stderr, "no local address in %s\n", status);
        goto done;
    }
    kf_string_free(status);
    status = NULL;
    printf("forwarding %s:%d -> svc/%s:%d\n", host, port, service, remote_port);
    if (!http_get(host, port)) {
        goto done;
    }
    if ((r = kf_forward_status(fwd, &status)) != KF_OK) {
        report("kf_forward_status", r);
        goto done;
    }
    printf("status: %s\n", status);
    if ((r = kf_forward_stop(fwd)) != KF_OK) {
        report("kf_forward_stop", r);
        goto done;
    }
    if (!atomic_load(&ev.ready) || !atomic_load(&ev.stopped)) {
        fprintf(stderr, "missing events: ready=%d stopped=%d\n", atomic_load(&ev.ready),
                atomic_load(&ev.stopped));
        goto done;
    }
    printf("events: %d\n", atomic_load(&ev.count));
    ok = 1;

done:
    kf_string_free(status);
    kf_forward_free(fwd);
    kf_runtime_free(rt);
    return ok ? 0 : 1;
}
