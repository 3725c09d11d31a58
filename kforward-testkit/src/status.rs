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
    /// `details.kind`: the plural resource (the kind for `Invalid`), when the error is about
    /// one object.
    pub kind: Option<String>,
    /// `details.group` and `details.causes`, boxed: they are seldom set, and every
    /// `Result` of the testkit carries this type (clippy's `result_large_err`).
    pub more: Box<MoreDetails>,
}

/// The parts of a `Status`'s `details` that few errors have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoreDetails {
    /// `details.group`, the API group of `kind` ("" for the core group).
    pub group: Option<String>,
    /// `details.causes`: the fields an `Invalid` error is about.
    pub causes: Vec<Cause>,
}

/// One `details.causes` entry: a field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The field's path, such as `spec.selector`.
    pub field: String,
    /// The reason, such as `FieldValueRequired`.
    pub reason: &'static str,
    /// What is wrong, such as `Required value`.
    pub message: String,
}

impl Cause {
    /// A cause from the text of a `field.Error`: `FIELD: TYPE[: DETAIL]`, as in
    /// `spec.containers: Required value`.
    pub fn parse(text: &str) -> Cause {
        let (field, body) = text.split_once(": ").unwrap_or(("", text));
        // `field.ErrorType`'s strings and reasons (apimachinery/pkg/util/validation/field).
        const TYPES: [(&str, &str); 7] = [
            ("Required value", "FieldValueRequired"),
            ("Invalid value", "FieldValueInvalid"),
            ("Unsupported value", "FieldValueNotSupported"),
            ("Duplicate value", "FieldValueDuplicate"),
            ("Forbidden", "FieldValueForbidden"),
            ("Too long", "FieldValueTooLong"),
            ("Not found", "FieldValueNotFound"),
        ];
        let reason = TYPES
            .iter()
            .find(|(t, _)| body.starts_with(t))
            .map_or("FieldValueInvalid", |(_, r)| r);
        Cause {
            field: field.to_string(),
            reason,
            message: body.to_string(),
        }
    }
}

/// A resource as the API server names it in messages: `pods`, `deployments.apps`.
fn qualified(kind: Kind) -> String {
    if kind.group().is_empty() {
        kind.plural().to_string()
    } else {
        format!("{}.{}", kind.plural(), kind.group())
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            kind: None,
            more: Box::default(),
        }
    }

    fn about(mut self, kind: Kind, name: &str) -> Self {
        self.kind = Some(kind.plural().to_string());
        self.more.group = Some(kind.group().to_string());
        self.name = Some(name.to_string());
        self
    }

    /// 404: `pods "x" not found`, `deployments.apps "x" not found`.
    pub fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(kind)),
        )
        .about(kind, name)
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
            format!("{} \"{name}\" already exists", qualified(kind)),
        )
        .about(kind, name)
    }

    /// 409: the resourceVersion given with an update is not the current one.
    pub fn conflict(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(kind)
            ),
        )
        .about(kind, name)
    }

    /// 422: the object is invalid, for the reasons given as `field.Error` texts
    /// (`spec.selector: Required value`); `details` names the kind, as `NewInvalid` does.
    pub fn invalid(kind: Kind, name: &str, why: &str) -> Self {
        Self::invalid_fields(kind, name, &[why])
    }

    /// 422 for several field errors at once: `Deployment.apps "web" is invalid: [a, b]`.
    pub fn invalid_fields(kind: Kind, name: &str, errors: &[&str]) -> Self {
        let qualified_kind = if kind.group().is_empty() {
            kind.name().to_string()
        } else {
            format!("{}.{}", kind.name(), kind.group())
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!(
                "{qualified_kind} \"{name}\" is invalid: {}",
                aggregate(errors)
            ),
        );
        e.kind = Some(kind.name().to_string());
        e.more.group = Some(kind.group().to_string());
        e.name = Some(name.to_string());
        e.more.causes = errors.iter().map(|t| Cause::parse(t)).collect();
        e
    }

    /// 422 about no object: what a failed patch answers (`NewInvalid(schema.GroupKind{}, "",
    /// errs)` in `handlers/patch.go`), message ` "" is invalid: ...`.
    pub fn invalid_request(errors: &[&str]) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!(" \"\" is invalid: {}", aggregate(errors)),
        );
        e.kind = Some(String::new());
        e.name = Some(String::new());
        e.more.causes = errors.iter().map(|t| Cause::parse(t)).collect();
        e
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
        let qualified = if group.is_empty() {
            base.to_string()
        } else {
            format!("{base}.{group}")
        };
        let subject = match name {
            Some(n) => format!("{qualified} \"{n}\" is forbidden"),
            None => format!("{qualified} is forbidden"),
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
        e.more.group = Some(group.to_string());
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
            // Go leaves empty strings and lists out (`omitempty`).
            let mut d = json!({});
            for (field, value) in [
                ("name", &self.name),
                ("group", &self.more.group),
                ("kind", &self.kind),
            ] {
                if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
                    d[field] = json!(value);
                }
            }
            if !self.more.causes.is_empty() {
                d["causes"] = self
                    .more
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
            }
            v["details"] = d;
        }
        v
    }
}

/// `utilerrors.NewAggregate(errs).Error()`: one error as it is, several in brackets.
fn aggregate(errors: &[&str]) -> String {
    match errors {
        [one] => (*one).to_string(),
        many => format!("[{}]", many.join(", ")),
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
