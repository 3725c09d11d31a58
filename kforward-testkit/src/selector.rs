//! Label and field selectors, as the API server evaluates them for lists, watches and controllers.

use serde_json::Value;

use crate::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`app=web,tier!=db,env in (a,b),!legacy`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Selector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl Selector {
    pub(crate) fn parse(s: &str) -> Result<Selector, ApiError> {
        let bad = |part: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{part}', expected: in, notin, =, ==, !=, gt, lt"
            ))
        };
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(rest).ok_or_else(|| bad(part))?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(k.trim().into(), set(rest).ok_or_else(|| bad(part))?)
            } else if part.contains(char::is_whitespace) || part.contains(['(', ')']) {
                return Err(bad(part));
            } else {
                Req::Exists(part.to_string())
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Builds the selector `matchLabels`/`selector` maps stand for.
    pub(crate) fn from_map(map: &Value) -> Selector {
        Selector(
            map.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| Req::Eq(k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Builds the selector a `LabelSelector` (`matchLabels` and `matchExpressions`) stands
    /// for; requirements sorted by key, as `LabelSelectorAsSelector` sorts them.
    pub(crate) fn from_label_selector(selector: &Value) -> Selector {
        let mut reqs = Selector::from_map(&selector["matchLabels"]).0;
        for e in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or("").to_string();
            let mut values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            values.sort();
            reqs.push(match e["operator"].as_str() {
                Some("In") => Req::In(key, values),
                Some("NotIn") => Req::NotIn(key, values),
                Some("Exists") => Req::Exists(key),
                _ => Req::NotExists(key),
            });
        }
        reqs.sort_by(|a, b| a.key().cmp(b.key()));
        Selector(reqs)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object's `metadata.labels` match.
    pub(crate) fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::Ne(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

impl Req {
    fn key(&self) -> &str {
        match self {
            Req::Eq(k, _)
            | Req::Ne(k, _)
            | Req::In(k, _)
            | Req::NotIn(k, _)
            | Req::Exists(k)
            | Req::NotExists(k) => k,
        }
    }
}

/// The selector as the API server writes one (`labels.Selector.String()`):
/// `app=web,tier in (a,b),!legacy`.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                Req::Eq(k, v) => format!("{k}={v}"),
                Req::Ne(k, v) => format!("{k}!={v}"),
                Req::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Req::Exists(k) => k.clone(),
                Req::NotExists(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A field selector: only `metadata.name`, `metadata.namespace` and (for pods)
/// `status.phase` and `spec.nodeName`, like the fields the real server indexes.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub(crate) fn parse(s: &str, kind: crate::Kind) -> Result<FieldSelector, ApiError> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || (kind == crate::Kind::Pod && matches!(field, "status.phase" | "spec.nodeName"));
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            out.push((field.to_string(), eq, value.to_string()));
        }
        Ok(FieldSelector(out))
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let actual = field
                .split('.')
                .try_fold(obj, |v, k| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("");
            (actual == value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let l = json!({"app": "web", "tier": "front"});
        let ok = |s: &str| Selector::parse(s).expect(s).matches(&l);
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(!ok("app!=web"));
        assert!(ok("tier in (front, back)"));
        assert!(!ok("tier notin (front)"));
        assert!(ok("!legacy"));
        assert!(!ok("legacy"));
        assert!(ok(""));
        assert!(Selector::parse("app in web").is_err());
    }

    #[test]
    fn label_selector_objects_and_their_text() {
        let s = Selector::from_label_selector(&json!({
            "matchLabels": {"tier": "front", "app": "web"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]}],
        }));
        assert_eq!(s.to_string(), "app=web,env in (a,b),tier=front");
        assert!(s.matches(&json!({"app": "web", "tier": "front", "env": "a"})));
        assert!(!s.matches(&json!({"app": "web", "tier": "front"})));
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "demo"}});
        let f = FieldSelector::parse("metadata.name=a", crate::Kind::Pod).expect("parse");
        assert!(f.matches(&o));
        let f = FieldSelector::parse("metadata.name!=a", crate::Kind::Pod).expect("parse");
        assert!(!f.matches(&o));
        assert_eq!(
            FieldSelector::parse("spec.foo=a", crate::Kind::Pod)
                .expect_err("unsupported")
                .code,
            400
        );
    }
}
