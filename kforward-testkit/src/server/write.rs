//! The write verbs (create, update, patch, delete) with what the API server does around
//! storing: decoding against the schema (`fieldValidation`), `dryRun`, the status
//! subresource's split of the object, and DeleteOptions' `propagationPolicy`.
//!
//! Facts from `staging/src/k8s.io/apiserver/pkg/endpoints/handlers` of kubernetes/kubernetes:
//! `create.go`/`update.go` (an undecodable body is a 400 "KIND in version "V" cannot be
//! handled as a KIND: ..." via `transformDecodeError`), `patch.go` (a strict decoding error
//! after patching is a 422 about the field `patch`, whose value is the patch map printed by
//! Go's `%+v` for strategic merge patches and the patched object's JSON otherwise),
//! `rest.go` (`fieldValidation` defaults to `Warn`: unknown fields are dropped and each
//! becomes a `Warning` header).

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{patch, read_body};
use crate::registry::{delete as delete_object, prepare_create};
use crate::response::{Body, json_response};
use crate::schema::{drop_unknown_fields, schema_name};
use crate::state::Shared;
use crate::{ApiError, Kind};

/// What to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them, with a warning each (the default).
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// A write request's options from its query.
pub(crate) struct WriteOptions {
    pub(crate) validation: FieldValidation,
    pub(crate) dry_run: bool,
}

/// Whether the kind has a `status` subresource, so the main resource ignores status
/// changes and the subresource only changes status.
fn has_status(kind: Kind) -> bool {
    !matches!(kind, Kind::EndpointSlice | Kind::ControllerRevision)
}

/// Keeps the part of `current` the write may not change: status for the main resource,
/// everything else for `/status`.
fn split_status(kind: Kind, subresource: Option<&str>, current: &Value, next: &mut Value) {
    if !has_status(kind) {
        return;
    }
    if subresource == Some("status") {
        let status = next["status"].take();
        *next = current.clone();
        next["status"] = status;
    } else {
        next["status"] = current["status"].clone();
    }
}

/// `Warning` headers for the fields dropped under `Warn`.
fn with_warnings(mut r: Response<Body>, unknown: &[String]) -> Response<Body> {
    for field in unknown {
        let text = format!(
            "299 - \"unknown field {}\"",
            go_quote(field).replace('"', "\\\"")
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// `strict decoding error: unknown field "a", unknown field "b"`.
fn strict_error(unknown: &[String]) -> String {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {}", go_quote(f)))
        .collect();
    format!("strict decoding error: {}", fields.join(", "))
}

/// Decodes a body as `kind` would be: drops (or, under Strict, refuses) unknown fields.
fn decode(
    kind: Kind,
    body: &[u8],
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {e}",
            kind.name(),
            kind.name()
        ))
    })?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: the body is not a JSON object",
            kind.name(),
            kind.name()
        )));
    }
    let unknown = drop_unknown_fields(&schema_name(kind), &mut obj);
    if validation == FieldValidation::Strict && !unknown.is_empty() {
        let sent_kind = obj["kind"].as_str().unwrap_or(kind.name()).to_string();
        let version = obj["apiVersion"]
            .as_str()
            .map_or("v1", |v| v.rsplit('/').next().unwrap_or(v))
            .to_string();
        return Err(ApiError::bad_request(format!(
            "{sent_kind} in version {version:?} cannot be handled as a {}: {}",
            kind.name(),
            strict_error(&unknown)
        )));
    }
    let unknown = if validation == FieldValidation::Warn {
        unknown
    } else {
        Vec::new()
    };
    Ok((obj, unknown))
}

pub(crate) async fn create(
    shared: &Shared,
    req: Request<Incoming>,
    kind: Kind,
    ns: &str,
    opts: WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(req).await?;
    let (obj, unknown) = decode(kind, &body, opts.validation)?;
    let mut obj = prepare_create(shared, kind, obj)?;
    if kind == Kind::Pod {
        // Defaulting and admission (Pod Security, webhooks) run before a dry run returns,
        // as in the API server.
        crate::admission::admit_pod(shared, ns, &mut obj)?;
    }
    if opts.dry_run {
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &obj),
            &unknown,
        ));
    }
    let created = shared.store.create(kind, ns, obj)?;
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &created),
        &unknown,
    ))
}

pub(crate) async fn update(
    shared: &Shared,
    req: Request<Incoming>,
    kind: Kind,
    ns: &str,
    name: &str,
    subresource: Option<&str>,
    opts: WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(req).await?;
    let (mut obj, unknown) = decode(kind, &body, opts.validation)?;
    if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    if opts.dry_run {
        let current = shared.store.get(kind, ns, name)?;
        split_status(kind, subresource, &current, &mut obj);
        return Ok(with_warnings(json_response(StatusCode::OK, &obj), &unknown));
    }
    let updated = shared.store.update(kind, ns, name, |cur| {
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
            && Some(rv) != cur["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(kind, name));
        }
        let mut next = obj.clone();
        split_status(kind, subresource, cur, &mut next);
        *cur = next;
        Ok(())
    })?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &updated),
        &unknown,
    ))
}

pub(crate) async fn patch(
    shared: &Shared,
    req: Request<Incoming>,
    kind: Kind,
    ns: &str,
    name: &str,
    subresource: Option<&str>,
    opts: WriteOptions,
) -> Result<Response<Body>, ApiError> {
    let content_type = patch::content_type(&req);
    let body = read_body(req).await?;
    let p: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let how = Patching {
        kind,
        content_type: &content_type,
        patch: &p,
        subresource,
        validation: opts.validation,
    };
    let mut unknown = Vec::new();
    let updated = if opts.dry_run {
        let mut cur = shared.store.get(kind, ns, name)?;
        unknown = how.apply(&mut cur)?;
        cur
    } else {
        shared.store.update(kind, ns, name, |cur| {
            unknown = how.apply(cur)?;
            Ok(())
        })?
    };
    if opts.validation != FieldValidation::Warn {
        unknown.clear();
    }
    Ok(with_warnings(
        json_response(StatusCode::OK, &updated),
        &unknown,
    ))
}

/// One PATCH request, applied to the current object.
struct Patching<'a> {
    kind: Kind,
    content_type: &'a str,
    patch: &'a Value,
    subresource: Option<&'a str>,
    validation: FieldValidation,
}

impl Patching<'_> {
    /// Patches `cur` in place and returns the unknown fields it dropped.
    fn apply(&self, cur: &mut Value) -> Result<Vec<String>, ApiError> {
        let mut next = cur.clone();
        match self.content_type {
            "application/merge-patch+json" => patch::merge(&mut next, self.patch),
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge(&mut next, self.patch)
            }
            "application/json-patch+json" => patch::json_patch(&mut next, self.patch)?,
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        let patched = next.clone();
        let found = drop_unknown_fields(&schema_name(self.kind), &mut next);
        if self.validation == FieldValidation::Strict && !found.is_empty() {
            // The value `patch.go` shows: the patch map for a strategic merge patch, the
            // patched object otherwise.
            let shown = if self.content_type == "application/strategic-merge-patch+json" {
                go_value(self.patch)
            } else {
                patched.to_string()
            };
            return Err(ApiError::invalid_request(&[&format!(
                "patch: Invalid value: {}: {}",
                go_quote(&shown),
                strict_error(&found)
            )]));
        }
        split_status(self.kind, self.subresource, cur, &mut next);
        *cur = next;
        Ok(found)
    }
}

pub(crate) async fn delete(
    shared: &Shared,
    req: Request<Incoming>,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(req).await?;
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if options["propagationPolicy"] == "Orphan" || options["orphanDependents"] == true {
        orphan_dependents(shared, kind, ns, name)?;
    }
    let obj = delete_object(shared, kind, ns, name)?;
    Ok(json_response(StatusCode::OK, &obj))
}

/// Removes the owner references that point at the object, as the garbage collector does
/// before an orphaning deletion.
fn orphan_dependents(shared: &Shared, kind: Kind, ns: &str, name: &str) -> Result<(), ApiError> {
    let owner = shared.store.get(kind, ns, name)?;
    let uid = owner["metadata"]["uid"].clone();
    for k in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
        for o in shared.store.list(k, Some(ns)).0 {
            let owned = o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
            if !owned {
                continue;
            }
            let dependent = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            shared.store.update(k, ns, &dependent, |d| {
                if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// A string as Go's `%q` writes it.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A decoded JSON value as Go's `%+v` prints a `map[string]interface{}`: `map[a:1 b:[x
/// y]]`, keys sorted; numbers as the decoder kept them (integers as int64).
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => go_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// A float64 as Go's `%v` prints it (`strconv.FormatFloat(f, 'g', -1, 64)`).
fn go_float(f: f64) -> String {
    let exp = if f == 0.0 {
        0
    } else {
        f.abs().log10().floor() as i32
    };
    if (-4..21).contains(&exp) {
        let s = format!("{f}");
        s
    } else {
        let s = format!("{f:e}");
        // Rust: 1e21, 1.5e-5; Go: 1e+21, 1.5e-05.
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(
            go_value(&json!({"spec": {"replicas": 2, "foo": "bar", "l": ["a", 1.5, null, true]}})),
            "map[spec:map[foo:bar l:[a 1.5 <nil> true] replicas:2]]"
        );
        assert_eq!(go_quote("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.000015), "1.5e-05");
        assert_eq!(go_float(0.5), "0.5");
    }

    #[test]
    fn strict_create_errors_read_as_the_api_server_writes_them() {
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"foo":1,"replicas":1}}"#;
        let e = decode(Kind::Deployment, body, FieldValidation::Strict).expect_err("strict");
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert_eq!(
            e.message,
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.foo\""
        );
        let (obj, warned) = decode(Kind::Deployment, body, FieldValidation::Warn).expect("warn");
        assert_eq!(warned, ["spec.foo"]);
        assert!(obj["spec"].get("foo").is_none());
        let (_, ignored) = decode(Kind::Deployment, body, FieldValidation::Ignore).expect("ignore");
        assert!(ignored.is_empty());
    }
}
