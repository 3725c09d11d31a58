//! [`ServiceForwarder`]: TCP to the ready pods behind a service.

use std::ops::{Deref, DerefMut};

use crate::client::KubeContext;
use crate::forwarder::{ForwardOptions, TcpForwarder};
use crate::spec::{ForwardSpec, PortMapping, Target};

/// Forwards to a service: each connection goes to one of its ready pods (round robin, as
/// the Service itself spreads them), the service port mapped to the target port.
///
/// # Example
///
/// ```no_run
/// # async fn f(ctx: kforward_core::KubeContext) -> kforward_core::Result<()> {
/// use kforward_core::{Forwarder, ServiceForwarder, spec::PortMapping};
/// let mut fwd = ServiceForwarder::new(ctx, "demo", "web", [PortMapping::new(0, 80)]);
/// fwd.start().await?;
/// # Ok(()) }
/// ```
pub struct ServiceForwarder(TcpForwarder);

impl ServiceForwarder {
    /// A forward to service `name` in `namespace`.
    pub fn new(
        ctx: KubeContext,
        namespace: &str,
        name: &str,
        ports: impl IntoIterator<Item = PortMapping>,
    ) -> Self {
        let spec = ForwardSpec::new(
            Target::Service {
                name: name.to_string(),
            },
            ports,
        )
        .with_namespace(namespace);
        ServiceForwarder(TcpForwarder::new(ctx, spec, ForwardOptions::default()))
    }
}

impl Deref for ServiceForwarder {
    type Target = TcpForwarder;
    fn deref(&self) -> &TcpForwarder {
        &self.0
    }
}

impl DerefMut for ServiceForwarder {
    fn deref_mut(&mut self) -> &mut TcpForwarder {
        &mut self.0
    }
}
