//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (for the lists the
//! served kinds have) and JSON patch (RFC 6902).

use http::{Request, header};
use serde_json::Value;

use crate::ApiError;

/// The media type of a request body (which patch it is), without parameters; JSON when
/// the request names none.
pub(crate) fn content_type<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Applies an RFC 7386 merge patch.
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

/// The `patchMergeKey` of a list field of the served kinds ([`crate::schema::MERGE_KEYS`]),
/// or `None` for lists a strategic merge replaces whole. The field name decides, except
/// for `ports`: container ports merge on `containerPort`, service ports on `port`.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let mut keys = crate::schema::MERGE_KEYS
        .iter()
        .filter(|(_, f, key)| *f == field && !key.is_empty())
        .map(|(_, _, key)| *key);
    if field == "ports" {
        let container = items.iter().any(|i| i.get("containerPort").is_some());
        return Some(if container { "containerPort" } else { "port" });
    }
    keys.next()
}

/// Applies a strategic merge patch (`k8s.io/apimachinery/pkg/util/strategicpatch`): a merge
/// patch, except that a list with a patch merge key (containers by `name`, container ports
/// by `containerPort`, ...) is merged element by element, so `kubectl set image` keeps a
/// container's ports. An element with `"$patch": "delete"` is removed and one with
/// `"$patch": "replace"` makes the list the patch's; a map with `"$patch": "replace"`
/// replaces the map and one with `"$patch": "delete"` removes it; the other `$`
/// directives (`$setElementOrder/...`, `$retainKeys`) only order or prune and are ignored.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    // `"$patch": "replace"` in a map: the map becomes the patch's (how a StatefulSet's
    // ControllerRevision restores a whole template).
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = Value::Null;
        let mut rest = p.clone();
        rest.remove("$patch");
        strategic_merge(target, &Value::Object(rest));
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(k);
            continue;
        }
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match v {
            Value::Array(items) if items.iter().all(Value::is_object) => {
                match merge_key(k, items) {
                    Some(key) => merge_list(slot, items, key),
                    None => *slot = v.clone(),
                }
            }
            _ => strategic_merge(slot, v),
        }
    }
}

fn merge_list(target: &mut Value, items: &[Value], key: &str) {
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Value::Array(list) = target else { return };
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        list.clear();
    }
    for item in items {
        if item.get("$patch").and_then(Value::as_str) == Some("replace") {
            continue;
        }
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = item
            .get(key)
            .and_then(|id| list.iter().position(|e| e.get(key) == Some(id)));
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item),
            (None, false) => {
                let mut new = Value::Null;
                strategic_merge(&mut new, item);
                list.push(new);
            }
        }
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
    fn strategic_merge_merges_keyed_lists() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "a:1", "ports": [{"name": "http", "containerPort": 8080}]},
            {"name": "side", "image": "b:1"}
        ], "tolerations": [{"key": "x"}]}}}});
        strategic_merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [
                    {"name": "web", "image": "a:2", "ports": [{"containerPort": 9090}]},
                    {"name": "side", "$patch": "delete"},
                    {"name": "new", "image": "c:1"}
                ],
                "tolerations": [{"key": "y"}]
            }}}}),
        );
        assert_eq!(
            d,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "a:2", "ports": [
                    {"name": "http", "containerPort": 8080}, {"containerPort": 9090}
                ]},
                {"name": "new", "image": "c:1"}
            ], "tolerations": [{"key": "y"}]}}}})
        );
        let mut t =
            json!({"spec": {"template": {"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}}}});
        strategic_merge(
            &mut t,
            &json!({"spec": {"template": {"$patch": "replace", "spec": {"y": 2}}}}),
        );
        assert_eq!(t, json!({"spec": {"template": {"spec": {"y": 2}}}}));
        strategic_merge(&mut t, &json!({"spec": {"template": {"$patch": "delete"}}}));
        assert_eq!(t, json!({"spec": {}}));
        let mut v = json!({"env": [{"name": "A"}, {"name": "B"}]});
        strategic_merge(
            &mut v,
            &json!({"env": [{"$patch": "replace"}, {"name": "C"}]}),
        );
        assert_eq!(v, json!({"env": [{"name": "C"}]}));
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
