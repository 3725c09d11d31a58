//! Just enough of the API server's protobuf encoding for a SelfSubjectAccessReview, which
//! kubectl (`kubectl auth can-i`) sends as protobuf, not JSON.
//!
//! Facts, from Kubernetes' "API concepts: protobuf encoding" and the `protobuf:` struct
//! tags of `k8s.io/api/authorization/v1` and `k8s.io/apimachinery/pkg/runtime`:
//! - a body is the magic `6b 38 73 00` ("k8s\0") and then a `runtime.Unknown` message:
//!   1 `typeMeta` (1 apiVersion, 2 kind), 2 `raw` (the object's own message),
//!   3 `contentEncoding`, 4 `contentType`;
//! - `SelfSubjectAccessReview`: 1 metadata, 2 spec, 3 status;
//! - `SelfSubjectAccessReviewSpec`: 1 resourceAttributes, 2 nonResourceAttributes;
//! - `ResourceAttributes`: 1 namespace, 2 verb, 3 group, 4 version, 5 resource,
//!   6 subresource, 7 name (all strings);
//! - `NonResourceAttributes`: 1 path, 2 verb;
//! - `SubjectAccessReviewStatus`: 1 allowed (bool), 2 reason, 3 evaluationError,
//!   4 denied (bool).
//!
//! Wire format (protobuf's encoding guide): each field is a varint key
//! `field_number << 3 | wire_type`; wire type 0 is a varint, 1 eight bytes, 2 a varint
//! length then that many bytes, 5 four bytes.

use serde_json::{Map, Value, json};

use crate::ApiError;

/// The media type of protobuf bodies.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The four bytes every protobuf body starts with.
const MAGIC: &[u8; 4] = b"k8s\0";
/// `ResourceAttributes`' string fields, by number.
const RESOURCE_ATTRIBUTES: [(u64, &str); 7] = [
    (1, "namespace"),
    (2, "verb"),
    (3, "group"),
    (4, "version"),
    (5, "resource"),
    (6, "subresource"),
    (7, "name"),
];
/// `NonResourceAttributes`' string fields, by number.
const NON_RESOURCE_ATTRIBUTES: [(u64, &str); 2] = [(1, "path"), (2, "verb")];

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf SelfSubjectAccessReview: {what}"))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

/// A field of one message: length-delimited values as bytes; the others (varints, fixed)
/// are skipped, as nothing read here needs them.
enum Field<'a> {
    Bytes(&'a [u8]),
    Other,
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ApiError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
                Field::Other
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                pos = pos
                    .checked_add(n)
                    .filter(|p| *p <= buf.len())
                    .ok_or_else(|| bad("truncated fixed field"))?;
                Field::Other
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad("length"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(|| bad("truncated field"))?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            w => return Err(bad(&format!("unsupported wire type {w}"))),
        };
        out.push((key >> 3, field));
    }
    Ok(out)
}

fn message(buf: &[u8], number: u64) -> Result<Option<&[u8]>, ApiError> {
    Ok(fields(buf)?.into_iter().find_map(|(n, f)| match f {
        Field::Bytes(b) if n == number => Some(b),
        _ => None,
    }))
}

/// The string fields of a message, named by number.
fn strings(buf: &[u8], names: &[(u64, &str)]) -> Result<Value, ApiError> {
    let mut obj = Map::new();
    for (n, f) in fields(buf)? {
        if let (Some((_, name)), Field::Bytes(b)) = (names.iter().find(|(k, _)| *k == n), f) {
            let s = std::str::from_utf8(b).map_err(|_| bad("a string is not UTF-8"))?;
            obj.insert((*name).to_string(), json!(s));
        }
    }
    Ok(Value::Object(obj))
}

/// Decodes a protobuf SelfSubjectAccessReview body into its JSON form (the spec only:
/// that is all the review reads).
pub(crate) fn decode_access_review(body: &[u8]) -> Result<Value, ApiError> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("no k8s magic"))?;
    let raw = message(unknown, 2)?.ok_or_else(|| bad("no raw object"))?;
    let mut spec = Map::new();
    if let Some(s) = message(raw, 2)? {
        if let Some(ra) = message(s, 1)? {
            spec.insert(
                "resourceAttributes".into(),
                strings(ra, &RESOURCE_ATTRIBUTES)?,
            );
        }
        if let Some(nra) = message(s, 2)? {
            spec.insert(
                "nonResourceAttributes".into(),
                strings(nra, &NON_RESOURCE_ATTRIBUTES)?,
            );
        }
    }
    Ok(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": spec,
    }))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, b: &[u8]) {
    put_varint(out, number << 3 | 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_bool(out: &mut Vec<u8>, number: u64, v: bool) {
    put_varint(out, number << 3);
    put_varint(out, u64::from(v));
}

/// Encodes the answer to a review whose JSON form is `review` (spec and status set).
pub(crate) fn encode_access_review(review: &Value) -> Vec<u8> {
    let str_fields = |v: &Value, names: &[(u64, &str)]| {
        let mut m = Vec::new();
        for (n, name) in names {
            if let Some(s) = v[*name].as_str() {
                put_bytes(&mut m, *n, s.as_bytes());
            }
        }
        m
    };
    let spec_json = &review["spec"];
    let mut spec = Vec::new();
    if spec_json["resourceAttributes"].is_object() {
        put_bytes(
            &mut spec,
            1,
            &str_fields(&spec_json["resourceAttributes"], &RESOURCE_ATTRIBUTES),
        );
    }
    if spec_json["nonResourceAttributes"].is_object() {
        put_bytes(
            &mut spec,
            2,
            &str_fields(
                &spec_json["nonResourceAttributes"],
                &NON_RESOURCE_ATTRIBUTES,
            ),
        );
    }
    let st = &review["status"];
    let mut status = Vec::new();
    put_bool(&mut status, 1, st["allowed"].as_bool().unwrap_or(false));
    if let Some(r) = st["reason"].as_str() {
        put_bytes(&mut status, 2, r.as_bytes());
    }
    if st["denied"].as_bool() == Some(true) {
        put_bool(&mut status, 4, true);
    }
    let mut raw = Vec::new();
    put_bytes(&mut raw, 1, &[]);
    put_bytes(&mut raw, 2, &spec);
    put_bytes(&mut raw, 3, &status);
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, b"authorization.k8s.io/v1");
    put_bytes(&mut type_meta, 2, b"SelfSubjectAccessReview");
    let mut out = MAGIC.to_vec();
    put_bytes(&mut out, 1, &type_meta);
    put_bytes(&mut out, 2, &raw);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_round_trips_through_its_protobuf_form() {
        let review = json!({
            "spec": {"resourceAttributes": {
                "namespace": "demo", "verb": "create", "resource": "pods",
                "subresource": "portforward",
            }},
            "status": {"allowed": false, "denied": true, "reason": "no"},
        });
        let bytes = encode_access_review(&review);
        assert!(bytes.starts_with(b"k8s\0"));
        let back = decode_access_review(&bytes).expect("decodes");
        assert_eq!(back["spec"], review["spec"]);
        assert_eq!(back["kind"], "SelfSubjectAccessReview");
    }

    #[test]
    fn bad_bodies_are_400_not_panics() {
        for body in [
            &b""[..],
            b"{\"json\":1}",
            b"k8s\0\x12\x05ab",
            b"k8s\0\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
            b"k8s\0\x13",
        ] {
            let e = decode_access_review(body).expect_err("refused");
            assert_eq!(e.code, 400, "{body:?}");
        }
    }
}
