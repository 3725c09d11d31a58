//! Turning a request path into the resource it names.

use crate::Kind;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1`, `/apis/GROUP/VERSION`
    Resources {
        group: String,
        version: String,
    },
    /// `/apis/GROUP` (the group's preferred version)
    Group {
        group: String,
    },
    /// A collection or an object, maybe with a subresource.
    Object {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`
    SelfSubjectAccessReview,
}

/// Parses a path; `None` is a 404.
pub(crate) fn parse(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => {
            return Some(Route::Group {
                group: g.to_string(),
            });
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let known = matches!(
        (group, version),
        ("", "v1") | ("apps", "v1") | ("discovery.k8s.io", "v1") | ("authorization.k8s.io", "v1")
    );
    if !known {
        return None;
    }
    let object = |kind: Kind, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        if kind.namespaced() != ns.is_some() && name.is_some() {
            return None;
        }
        Some(Route::Object {
            kind,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    };
    match rest {
        [] => Some(Route::Resources {
            group: group.to_string(),
            version: version.to_string(),
        }),
        ["selfsubjectaccessreviews"] if group == "authorization.k8s.io" => {
            Some(Route::SelfSubjectAccessReview)
        }
        ["namespaces", ns, plural, tail @ ..] => {
            let kind = Kind::from_plural(group, plural);
            match (kind, tail) {
                (Some(k), []) if k.namespaced() => object(k, Some(ns), None, None),
                (Some(k), [name]) if k.namespaced() => object(k, Some(ns), Some(name), None),
                (Some(k), [name, sub]) if k.namespaced() => {
                    object(k, Some(ns), Some(name), Some(sub))
                }
                // `/api/v1/namespaces/NAME/status` and friends.
                (None, []) if group.is_empty() && matches!(*plural, "status" | "finalize") => {
                    object(Kind::Namespace, None, Some(ns), Some(plural))
                }
                _ => None,
            }
        }
        [plural] => Kind::from_plural(group, plural).and_then(|k| object(k, None, None, None)),
        [plural, name] => {
            let k = Kind::from_plural(group, plural)?;
            if k.namespaced() {
                return None;
            }
            object(k, None, Some(name), None)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: Kind, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Option<Route> {
        Some(Route::Object {
            kind,
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn paths() {
        assert_eq!(parse("/api/v1/pods"), obj(Kind::Pod, None, None, None));
        assert_eq!(
            parse("/api/v1/namespaces/demo/pods/web-1/portforward"),
            obj(Kind::Pod, Some("demo"), Some("web-1"), Some("portforward"))
        );
        assert_eq!(
            parse("/api/v1/namespaces/demo"),
            obj(Kind::Namespace, None, Some("demo"), None)
        );
        assert_eq!(
            parse("/api/v1/namespaces"),
            obj(Kind::Namespace, None, None, None)
        );
        assert_eq!(
            parse("/apis/apps/v1/namespaces/demo/deployments/web"),
            obj(Kind::Deployment, Some("demo"), Some("web"), None)
        );
        assert_eq!(
            parse("/apis/discovery.k8s.io/v1/endpointslices"),
            obj(Kind::EndpointSlice, None, None, None)
        );
        assert_eq!(parse("/api/v1/namespaces/demo/deployments"), None);
        assert_eq!(parse("/apis/apps/v2/deployments"), None);
        assert_eq!(
            parse("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some(Route::SelfSubjectAccessReview)
        );
    }
}
