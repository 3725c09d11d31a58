//! `kf_forward`: a forward started from a kftray-style JSON config, read through its status
//! JSON and its events, stopped and freed.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kforward_core::config::ForwardConfig;
use kforward_core::spec::ForwardSpec;
use kforward_core::{Error, ForwardOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::boundary::{guard, guard_void, out_arg, owned_string, str_arg};
use crate::driver::{Callback, Shared, drive, kf_event_callback};
use crate::result::{Fail, kf_result};
use crate::runtime::{RuntimeOwner, check_may_block, kf_runtime, on_async_thread};

/// One forward: local listeners whose connections go to a pod of one target. Start it with
/// `kf_forward_start`, free it with `kf_forward_free`.
///
/// A forward may be used from several threads at once, except that `kf_forward_free` must
/// be the last call on it, made when no other call on it is running.
pub struct kf_forward {
    runtime: Arc<RuntimeOwner>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// The task running the forward; taken by the first stop.
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl kf_forward {
    /// Stops the forward and waits until it has stopped and its last event was handed to
    /// the callback. `Ok(false)` when another call had stopped it already.
    fn stop_and_wait(&self) -> Result<bool, Fail> {
        let driver = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.stop.cancel();
        let Some(driver) = driver else {
            return Ok(false);
        };
        let Some(handle) = self.runtime.handle() else {
            return Err(Fail::new(
                kf_result::KF_INTERNAL,
                "the runtime has already shut down",
            ));
        };
        match handle.block_on(driver) {
            Ok(()) => Ok(true),
            Err(e) if e.is_panic() => Err(Fail::new(
                kf_result::KF_PANIC,
                "the forward's task panicked (please report this)",
            )),
            Err(e) => Err(Fail::new(
                kf_result::KF_INTERNAL,
                format!("the forward's task ended early: {e}"),
            )),
        }
    }
}

/// Parses one entry of a kftray config, with kforward's `relay_env` (an object of strings:
/// the relay pod's environment).
fn parse_config(json: &str) -> Result<(ForwardSpec, ForwardOptions), Fail> {
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        Fail::new(
            kf_result::KF_INVALID_JSON,
            format!("config_json is not JSON: {e}"),
        )
    })?;
    let mut opts = ForwardOptions::default();
    if let Some(env) = value.as_object_mut().and_then(|o| o.remove("relay_env")) {
        let env: std::collections::BTreeMap<String, String> = serde_json::from_value(env)
            .map_err(|e| {
                Fail::new(
                    kf_result::KF_INVALID_CONFIG,
                    format!("relay_env must be an object of strings, like {{\"HTTPS_PROXY\": \"http://proxy:3128\"}}: {e}"),
                )
            })?;
        kforward_core::relay::check_relay_env(&env)
            .map_err(|e| Fail::new(kf_result::KF_INVALID_CONFIG, format!("relay_env: {e}")))?;
        opts.relay.env = env;
    }
    let config: ForwardConfig = serde_json::from_value(value).map_err(|e| {
        Fail::new(
            kf_result::KF_INVALID_CONFIG,
            format!("config_json is not a valid forward config: {e}"),
        )
    })?;
    let spec = ForwardSpec::try_from(&config).map_err(|e| Fail::from(&Error::from(e)))?;
    config
        .relay
        .apply_to(&mut opts.relay)
        .map_err(|e| Fail::from(&Error::from(e)))?;
    Ok((spec, opts))
}

/// Starts a forward described by `config_json` on runtime `rt` and writes its handle to
/// `*out`. Free the handle with `kf_forward_free`.
///
/// `config_json` is one entry of a kftray config file, a JSON object such as
/// `{"service":"web","namespace":"demo","local_port":0,"remote_port":80,
/// "kubeconfig":"/path/to/kubeconfig","context":"dev"}`; `local_port` 0 picks a free port,
/// `kubeconfig` missing means `KUBECONFIG` or `~/.kube/config`, `context` missing means the
/// current context. `workload_type` may be `service`, `pod`, `proxy` (with
/// `remote_address`), `deployment`, `statefulset` or `replicaset` (named by `service`), and
/// `protocol` `tcp` or `udp`: UDP and proxy forwards go through a relay pod in the
/// namespace, shared by the forwards of one cluster and the same relay settings on this
/// runtime and deleted when the last of them stops. The relay pod is shaped by
/// `relay_image` (e.g. a mirror of the default `ghcr.io/kforward/kforward-relay:<version>`),
/// `relay_pull_policy` (`"Always"`, `"IfNotPresent"`, the default, or `"Never"`),
/// `relay_pull_secrets` (a list of secret names in the namespace), `relay_pod_patch` (a
/// JSON merge patch over the pod, such as `{"spec":{"nodeSelector":{"pool":"tools"}}}`) and
/// `relay_env` (an object of strings, such as `{"HTTPS_PROXY": "http://proxy.corp:3128"}`:
/// the pod's environment, for a cluster whose pods reach the outside only through a
/// proxy); forwards with other relay settings get relay pods of their own.
/// `proxy_protocol` (`"v1"` or `"v2"`) sends a PROXY protocol header toward the target, and
/// `accept_proxy_protocol` (`"strict"` or `"optional"`) reads one from each local client
/// (TCP only). The API server is reached through the kubeconfig cluster's `proxy-url`, else
/// `HTTPS_PROXY`/`ALL_PROXY` unless `NO_PROXY` matches, as kubectl does.
///
/// This returns at once: the kubeconfig is loaded, the target resolved and the ports bound
/// on the runtime's threads. Wait with `kf_forward_wait_ready`, watch the events, or read
/// `kf_forward_status`; errors in those steps show there (state `failed`), not here. Once
/// ready, the forward is kept up by the runtime's supervisor, as `kforward run` keeps its
/// forwards: it is probed, and reconnects by itself with backoff (state `reconnecting`)
/// while its local ports stay bound.
///
/// `callback` (may be NULL) receives every event of this forward, starting with the first;
/// see `kf_event_callback` for which thread calls it and when. `userdata` is passed to it
/// untouched, so it must stay valid, and be safe to use from other threads, until
/// `kf_forward_free` returns.
///
/// Returns `KF_OK`; `KF_NULL_ARGUMENT` when `rt`, `config_json` or `out` is NULL;
/// `KF_INVALID_UTF8`, `KF_INVALID_JSON` or `KF_INVALID_CONFIG` for a bad config;
/// `*out` is written only on `KF_OK`.
///
/// # Safety
///
/// `rt` is NULL or a live runtime from `kf_runtime_new`; `config_json` is NULL or a
/// NUL-terminated string; `out` is NULL or points to a writable `kf_forward *`; `callback`
/// and `userdata` are as described above.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_forward_start(
    rt: *const kf_runtime,
    config_json: *const c_char,
    callback: kf_event_callback,
    userdata: *mut c_void,
    out: *mut *mut kf_forward,
) -> kf_result {
    guard(|| {
        // SAFETY: `rt` is NULL or points to a live kf_runtime (the caller's promise).
        let rt = unsafe { rt.as_ref() }.ok_or_else(|| Fail::null("rt"))?;
        // SAFETY: `config_json` is NULL or a NUL-terminated string valid during this call.
        let json = unsafe { str_arg(config_json, "config_json") }?;
        out_arg(out, "out")?;
        let (spec, opts) = parse_config(json)?;
        let (Some(handle), Some(supervisor)) = (rt.owner.handle(), rt.owner.supervisor()) else {
            return Err(Fail::new(
                kf_result::KF_INTERNAL,
                "the runtime has already shut down",
            ));
        };
        let label = spec.label();
        // Subscribed before the add, so that the forward's first event is seen.
        let events = supervisor.subscribe();
        let id = {
            let _entered = handle.enter();
            supervisor.add_with(spec, opts)
        };
        let callback = Callback::new(callback, userdata);
        let shared = Arc::new(Shared::new(label, supervisor.clone(), id, callback));
        let stop = CancellationToken::new();
        let driver = handle.spawn(drive(shared.clone(), events, stop.clone()));
        let fwd = Box::new(kf_forward {
            runtime: rt.owner.clone(),
            shared,
            stop,
            driver: Mutex::new(Some(driver)),
        });
        // SAFETY: `out` is not NULL (checked above) and points to a writable pointer.
        unsafe { out.write(Box::into_raw(fwd)) };
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds for the forward to be ready (listening).
///
/// Returns `KF_OK` once it is ready (at once if it already is); the code of the failure
/// when it failed to start, such as `KF_NOT_FOUND`, `KF_KUBECONFIG`, `KF_BIND_FAILED`,
/// `KF_FORBIDDEN` or `KF_NO_READY_POD`, with the message in `kf_last_error_message`;
/// `KF_TIMEOUT` when it is still starting; `KF_ALREADY_STOPPED` when it was stopped;
/// `KF_NULL_ARGUMENT` when `fwd` is NULL.
///
/// # Safety
///
/// `fwd` is NULL or a live forward from `kf_forward_start`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_forward_wait_ready(
    fwd: *const kf_forward,
    timeout_ms: u32,
) -> kf_result {
    guard(|| {
        // SAFETY: `fwd` is NULL or points to a live kf_forward (the caller's promise).
        let fwd = unsafe { fwd.as_ref() }.ok_or_else(|| Fail::null("fwd"))?;
        fwd.shared
            .wait_ready(Duration::from_millis(u64::from(timeout_ms)))
    })
}

/// Writes the forward's status, a JSON object, to `*out_json`; free it with
/// `kf_string_free`.
///
/// `{"forward":"svc/web 0:80","state":"ready","local_addrs":["127.0.0.1:40123"],
/// "ports":[{"local_addr":"127.0.0.1:40123","remote":"80","pod_port":8080}],
/// "stats":{"connections_open":0,"connections_total":1,"connections_failed":0,
/// "bytes_in":120,"bytes_out":80},"last_error":null}`
///
/// `state` is `starting`, `ready`, `reconnecting` (listening, and reconnecting to the
/// cluster after a failure), `stopping`, `stopped` or `failed`. `connections_open` counts
/// the connections (and UDP peers) open now. `last_error` is the
/// latest error, `{"message":...}`, with `"code"` (a `kf_result` number), `"name"` and
/// `"retryable"` when it is why the forward failed. `bytes_in` counts bytes from the pods,
/// `bytes_out` bytes to them.
///
/// Returns `KF_OK`, or `KF_NULL_ARGUMENT` when `fwd` or `out_json` is NULL. `*out_json` is
/// written only on `KF_OK`.
///
/// # Safety
///
/// `fwd` is NULL or a live forward from `kf_forward_start`; `out_json` is NULL or points to
/// a writable `char *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_forward_status(
    fwd: *const kf_forward,
    out_json: *mut *mut c_char,
) -> kf_result {
    guard(|| {
        // SAFETY: `fwd` is NULL or points to a live kf_forward (the caller's promise).
        let fwd = unsafe { fwd.as_ref() }.ok_or_else(|| Fail::null("fwd"))?;
        out_arg(out_json, "out_json")?;
        let json = owned_string(fwd.shared.status_json())?;
        // SAFETY: `out_json` is not NULL (checked above) and points to a writable pointer.
        unsafe { out_json.write(json) };
        Ok(())
    })
}

/// Stops the forward: closes its listeners, gives open connections two seconds to finish,
/// then closes them. Blocks until it has stopped and its `stopped` event has been handed to
/// the callback. A forward still starting is stopped where it is.
///
/// Returns `KF_OK`; `KF_ALREADY_STOPPED` when `kf_forward_stop` was called on it before
/// (or is running on another thread); `KF_WRONG_THREAD` when called from an event callback
/// or another async runtime's thread; `KF_NULL_ARGUMENT` when `fwd` is NULL. The handle
/// stays valid: read its final status, then free it with `kf_forward_free`.
///
/// # Safety
///
/// `fwd` is NULL or a live forward from `kf_forward_start`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_forward_stop(fwd: *const kf_forward) -> kf_result {
    guard(|| {
        // SAFETY: `fwd` is NULL or points to a live kf_forward (the caller's promise).
        let fwd = unsafe { fwd.as_ref() }.ok_or_else(|| Fail::null("fwd"))?;
        check_may_block("kf_forward_stop")?;
        if fwd.stop_and_wait()? {
            Ok(())
        } else {
            Err(Fail::new(
                kf_result::KF_ALREADY_STOPPED,
                "the forward was already stopped by an earlier kf_forward_stop",
            ))
        }
    })
}

/// Stops the forward if it is running, waits for that, and frees the handle. NULL is
/// allowed and does nothing. After it returns the callback is not called again.
///
/// Called from an event callback it cannot wait: it stops the forward in the background
/// and returns at once; no new callback call starts after that, but one already running on
/// another thread may still be finishing.
///
/// # Safety
///
/// `fwd` is NULL or a live forward from `kf_forward_start`, not in use by another thread;
/// it must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn kf_forward_free(fwd: *mut kf_forward) {
    guard_void(|| {
        if fwd.is_null() {
            return;
        }
        // SAFETY: `fwd` came from Box::into_raw in kf_forward_start and is freed only once,
        // with no other call on it running (the caller's promise).
        let fwd = unsafe { Box::from_raw(fwd) };
        if on_async_thread() {
            // The driver goes on by itself and stops the forward; nothing waits for it.
            fwd.shared.detach();
            fwd.stop.cancel();
        } else {
            let _ = fwd.stop_and_wait();
        }
    });
}
