//! The `/testkit/` admin endpoints: the fault switches and counters over HTTP, for tests
//! written in other languages and for `kforward-testkit serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::ApiError;
use crate::faults;
use crate::response::{Body, error_response, json_response};
use crate::state::Shared;

/// Handles `/testkit/<rest>`. These endpoints need no token (the server is on loopback),
/// and they answer even while the API server is paused.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| {
        q.get(k)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("missing query parameter {k:?}")))
    };
    let ok = || json_response(StatusCode::OK, &json!({"ok": true}));
    if req.method() == Method::GET && rest == "stats" {
        return json_response(StatusCode::OK, &json!(shared.stats()));
    }
    if req.method() != Method::POST {
        return error_response(&ApiError::method_not_allowed());
    }
    let result: Result<Response<Body>, ApiError> = match rest {
        "drop-port-forwards" => {
            shared.drop_port_forwards();
            Ok(ok())
        }
        "pause" => {
            faults::pause(&shared, true);
            Ok(ok())
        }
        "resume" => {
            faults::pause(&shared, false);
            Ok(ok())
        }
        "restart" => {
            // Restarting cuts this very connection, so answer first.
            let s = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = super::restart(&s).await {
                    tracing::error!(error = %e, "restart failed");
                }
            });
            Ok(ok())
        }
        "latency" => get("ms").and_then(|ms| {
            let ms: u64 = ms
                .parse()
                .map_err(|_| ApiError::bad_request("ms must be a number"))?;
            faults::set_latency(&shared, Duration::from_millis(ms));
            Ok(ok())
        }),
        "deny" => get("verb").and_then(|verb| {
            faults::deny(&shared, &verb, &get("resource")?);
            Ok(ok())
        }),
        "allow-all" => {
            faults::allow_all(&shared);
            Ok(ok())
        }
        "expire-token" => faults::expire_token(&shared)
            .map(|_| ok())
            .map_err(|e| ApiError::internal(e.to_string())),
        "pod-ready" => (|| {
            let ready = get("ready")? != "false";
            faults::set_pod_ready(&shared, &get("namespace")?, &get("name")?, ready)?;
            Ok(ok())
        })(),
        "compact" => {
            shared.store.compact();
            Ok(ok())
        }
        _ => Err(ApiError::no_route()),
    };
    result.unwrap_or_else(|e| error_response(&e))
}
