//! The relay flags (`--relay-image`, `--relay-pull-secret`, `--relay-pull-policy`,
//! `--relay-pod-patch`, `--relay-env`, `--relay-idle-exit`) turned into the core's relay
//! options.

use anyhow::Context;
use kforward_core::relay::{PodPatch, PullPolicy, RelayOptions};

use crate::args::RelayArgs;

/// Sets what the flags give on `opts` (what they leave out stays; `--relay-env` replaces
/// the variables it names and keeps the others), and checks that the patched pod is a pod.
///
/// # Errors
///
/// A bad pull policy or environment variable, or a patch file that cannot be read or does
/// not give a pod.
pub fn apply(a: &RelayArgs, opts: &mut RelayOptions) -> anyhow::Result<()> {
    if let Some(image) = a.relay_image.as_deref().filter(|i| !i.trim().is_empty()) {
        opts.image = image.trim().to_string();
    }
    if let Some(policy) = &a.relay_pull_policy {
        opts.image_pull_policy = policy
            .parse::<PullPolicy>()
            .map_err(anyhow::Error::msg)
            .context("--relay-pull-policy")?;
    }
    opts.pull_secrets
        .extend(a.relay_pull_secrets.iter().cloned());
    if let Some(path) = &a.relay_pod_patch {
        opts.pod_patch = Some(PodPatch::from_file(path)?);
    }
    if let Some(idle) = a.relay_idle_exit {
        if idle.is_zero() {
            anyhow::bail!(
                "--relay-idle-exit 0: the relay would exit before its first client; give a duration such as 30s or 10m"
            );
        }
        opts.idle_exit = idle;
    }
    opts.env.extend(crate::args::relay_env(&a.relay_env)?);
    kforward_core::relay::check_relay_env(&opts.env)
        .map_err(|e| anyhow::anyhow!("--relay-env: {e}"))?;
    opts.pod_preview()?;
    Ok(())
}
