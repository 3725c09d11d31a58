//! The relay flags (`--relay-image`, `--relay-pull-secret`, `--relay-pull-policy`,
//! `--relay-pod-patch`) turned into the core's relay options.

use anyhow::Context;
use kforward_core::relay::{PodPatch, PullPolicy, RelayOptions};

use crate::args::RelayArgs;

/// Sets what the flags give on `opts` (what they leave out stays), and checks that the
/// patched pod is a pod.
///
/// # Errors
///
/// A bad pull policy, or a patch file that cannot be read or does not give a pod.
pub fn apply(a: &RelayArgs, opts: &mut RelayOptions) -> anyhow::Result<()> {
    if let Some(image) = a.relay_image.as_deref().filter(|i| !i.trim().is_empty()) {
        opts.image = image.trim().to_string();
    }
    opts.image_pull_policy = a
        .relay_pull_policy
        .parse::<PullPolicy>()
        .map_err(anyhow::Error::msg)
        .context("--relay-pull-policy")?;
    opts.pull_secrets
        .extend(a.relay_pull_secrets.iter().cloned());
    if let Some(path) = &a.relay_pod_patch {
        opts.pod_patch = Some(PodPatch::from_file(path)?);
    }
    opts.pod_preview()?;
    Ok(())
}
