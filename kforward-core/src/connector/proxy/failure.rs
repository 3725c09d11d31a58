//! [`ProxyFailure`]: a connection through the proxy toward the API server that failed, said
//! for the user: which proxy, what happened, what to check.

/// A connection through a proxy that failed; carried in the connector's error chain and
/// turned into [`crate::Error::Proxy`] where kube's errors are mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("through {proxy}: {message}")]
pub(crate) struct ProxyFailure {
    /// `the proxy http://alice@proxy:3128 (HTTPS_PROXY)`: the URL without its password and
    /// where it was set.
    pub(crate) proxy: String,
    /// What failed and what to check.
    pub(crate) message: String,
    /// Whether trying again may help (the proxy down or its upstream failing), as opposed
    /// to a setting to fix (credentials, rules, certificates).
    pub(crate) retryable: bool,
}

impl ProxyFailure {
    /// The first `ProxyFailure` in `e`'s chain of sources, if any.
    pub(crate) fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ProxyFailure> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(f) = err.downcast_ref::<ProxyFailure>() {
                return Some(f);
            }
            cur = err.source();
        }
        None
    }
}
