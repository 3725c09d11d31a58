//! [`PodForwarder`]: TCP to one pod, or to a ready pod chosen by label selector.

use std::ops::{Deref, DerefMut};

use crate::client::KubeContext;
use crate::forwarder::{ForwardOptions, TcpForwarder};
use crate::spec::{ForwardSpec, LabelSelector, PortMapping, Target};

/// Forwards to a pod by name, or to the ready pods matching a label selector.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::{Forwarder, PodForwarder, spec::PortMapping};
/// let mut fwd = PodForwarder::named(ctx, "demo", "web-abc12", [PortMapping::new(0, 8080)]);
/// fwd.start().await?;
/// # Ok(()) }
/// ```
pub struct PodForwarder(TcpForwarder);

impl PodForwarder {
    /// A forward to pod `name` in `namespace`.
    pub fn named(
        ctx: KubeContext,
        namespace: &str,
        name: &str,
        ports: impl IntoIterator<Item = PortMapping>,
    ) -> Self {
        let spec = ForwardSpec::new(
            Target::Pod {
                name: name.to_string(),
            },
            ports,
        )
        .with_namespace(namespace);
        PodForwarder(TcpForwarder::new(ctx, spec, ForwardOptions::default()))
    }

    /// A forward to the ready pods matching `selector` in `namespace`.
    pub fn selected(
        ctx: KubeContext,
        namespace: &str,
        selector: LabelSelector,
        ports: impl IntoIterator<Item = PortMapping>,
    ) -> Self {
        let spec =
            ForwardSpec::new(Target::PodSelector { selector }, ports).with_namespace(namespace);
        PodForwarder(TcpForwarder::new(ctx, spec, ForwardOptions::default()))
    }
}

impl Deref for PodForwarder {
    type Target = TcpForwarder;
    fn deref(&self) -> &TcpForwarder {
        &self.0
    }
}

impl DerefMut for PodForwarder {
    fn deref_mut(&mut self) -> &mut TcpForwarder {
        &mut self.0
    }
}
