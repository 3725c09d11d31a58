//! `Status` error bodies, shaped as the real API server writes them.

use serde_json::{Value, json};

use crate::Kind;

/// An API error: an HTTP code with the `Status` object the API server sends with it.
///
/// # Example
///
/// ```
/// use kforward_testkit::{ApiError, Kind};
/// let e = ApiError::not_found(Kind::Pod, "web-1");
/// assert_eq!(e.code, 404);
/// assert_eq!(e.message, "pods \"web-1\" not found");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `Forbidden`, ...).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details.name`, when the error is about one object.
    pub name: Option<String>,
    /// `details.kind` (the plural resource), when the error is about one object.
    pub kind: Option<String>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            kind: None,
        }
    }

    fn about(mut self, kind: &str, name: &str) -> Self {
        self.kind = Some(kind.to_string());
        self.name = Some(name.to_string());
        self
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.plural()),
        )
        .about(kind.plural(), name)
    }

    /// 404 for a path the testkit does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409: `pods "x" already exists`.
    pub fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.plural()),
        )
        .about(kind.plural(), name)
    }

    /// 409: the resourceVersion given with an update is not the current one.
    pub fn conflict(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural()
            ),
        )
        .about(kind.plural(), name)
    }

    /// 422: the object is invalid.
    pub fn invalid(kind: Kind, name: &str, why: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {why}", kind.name()),
        )
        .about(kind.plural(), name)
    }

    /// 400 with reason `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401: missing or wrong credentials.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 in the words of the RBAC authorizer.
    pub fn forbidden(
        user: &str,
        verb: &str,
        resource: &str,
        group: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let base = resource.split('/').next().unwrap_or(resource);
        let subject = match name {
            Some(n) => format!("{base} \"{n}\" is forbidden"),
            None => format!("{base} is forbidden"),
        };
        let scope = match namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        let mut e = Self::new(
            403,
            "Forbidden",
            format!(
                "{subject}: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{scope}"
            ),
        );
        e.kind = Some(base.to_string());
        e.name = name.map(str::to_string);
        e
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410: a watch or list from a resourceVersion that was compacted away.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 for a patch type the testkit does not take.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.name.is_some() || self.kind.is_some() {
            let mut d = json!({});
            if let Some(n) = &self.name {
                d["name"] = json!(n);
            }
            if let Some(k) = &self.kind {
                d["kind"] = json!(k);
            }
            v["details"] = d;
        }
        v
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_message_matches_rbac_wording() {
        let e = ApiError::forbidden(
            "kforward-dev",
            "create",
            "pods/portforward",
            "",
            Some("demo"),
            Some("web-1"),
        );
        assert_eq!(
            e.message,
            "pods \"web-1\" is forbidden: User \"kforward-dev\" cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"demo\""
        );
        assert_eq!(e.to_status()["code"], 403);
        assert_eq!(e.to_status()["details"]["kind"], "pods");
    }
}
