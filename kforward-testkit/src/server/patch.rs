//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge (as a merge patch) and JSON
//! patch (RFC 6902).

use serde_json::Value;

use crate::ApiError;

/// Applies an RFC 7386 merge patch. Strategic merge patches are applied the same way: they
/// differ only for lists with merge keys, which the fields `kubectl rollout restart`,
/// `kubectl label` and `kubectl annotate` touch do not have.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Applies an RFC 6902 JSON patch (`add`, `replace`, `remove`, `test`).
pub(crate) fn json_patch(target: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request(m);
    let ops = ops
        .as_array()
        .ok_or_else(|| bad("a JSON patch must be an array".into()))?;
    for op in ops {
        let kind = op["op"].as_str().unwrap_or("");
        let path = op["path"].as_str().unwrap_or("");
        let tokens: Vec<String> = path.split('/').skip(1).map(unescape).collect();
        let Some((last, parents)) = tokens.split_last() else {
            return Err(bad(format!("invalid JSON patch path {path:?}")));
        };
        let mut cur = &mut *target;
        for t in parents {
            cur = match cur {
                Value::Object(m) => m
                    .get_mut(t)
                    .ok_or_else(|| bad(format!("doc is missing path: {path:?}")))?,
                Value::Array(a) => t
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(|| bad(format!("doc is missing path: {path:?}")))?,
                _ => return Err(bad(format!("doc is missing path: {path:?}"))),
            };
        }
        match (kind, cur) {
            ("add" | "replace", Value::Object(m)) => {
                m.insert(last.clone(), op["value"].clone());
            }
            ("add", Value::Array(a)) => {
                let i = if last == "-" {
                    a.len()
                } else {
                    last.parse()
                        .map_err(|_| bad(format!("bad index in {path:?}")))?
                };
                if i > a.len() {
                    return Err(bad(format!("index out of range in {path:?}")));
                }
                a.insert(i, op["value"].clone());
            }
            ("replace", Value::Array(a)) => {
                let slot = last
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(|| bad(format!("doc is missing path: {path:?}")))?;
                *slot = op["value"].clone();
            }
            ("remove", Value::Object(m)) => {
                m.remove(last)
                    .ok_or_else(|| bad(format!("doc is missing path: {path:?}")))?;
            }
            ("remove", Value::Array(a)) => {
                let i = last
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < a.len())
                    .ok_or_else(|| bad(format!("doc is missing path: {path:?}")))?;
                a.remove(i);
            }
            ("test", c) => {
                let v = match c {
                    Value::Object(m) => m.get(last),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                if v != Some(&op["value"]) {
                    return Err(ApiError::invalid(
                        crate::Kind::Pod,
                        "",
                        "test operation failed",
                    ));
                }
            }
            (other, _) => return Err(bad(format!("unsupported JSON patch operation {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 2]});
        json_patch(
            &mut v,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/l/-", "value": 3},
                {"op": "replace", "path": "/l/0", "value": 0}
            ]),
        )
        .expect("patch");
        assert_eq!(
            v,
            json!({"metadata": {"labels": {"b": "2"}}, "l": [0, 2, 3]})
        );
    }
}
