//! The node's container images and what pulling one does: every image pulls while the
//! cluster is online; in air-gapped mode only the images the node already has can run, and
//! the kubelet reports the others as it would with no registry in reach.

use std::collections::BTreeSet;

/// Why an image cannot run: the container's waiting reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullFailure {
    /// `InvalidImageName`, `ErrImagePull` or `ErrImageNeverPull`.
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// Whether the kubelet keeps retrying (and reports `ImagePullBackOff` in between).
    pub(crate) backs_off: bool,
}

/// Whether an image reference has the tag `latest` or none (and no digest): the API
/// server then defaults `imagePullPolicy` to `Always`.
pub(crate) fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// The reference in full, as containerd names it: `docker.io/library/` for a bare name,
/// `:latest` when there is neither tag nor digest.
pub(crate) fn normalize(image: &str) -> String {
    let (first, rest) = image.split_once('/').unwrap_or(("", image));
    let has_registry =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        image.to_string()
    } else if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{image}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !full.contains('@') && !last.contains(':') {
        full.push_str(":latest");
    }
    full
}

/// Whether `image` parses as a reference (distribution's `reference` grammar, simplified
/// to what decides real cases: lowercase path components of `[a-z0-9._-]`, an optional
/// registry host with port, a tag of `[A-Za-z0-9_.-]` up to 128 characters, a digest).
pub(crate) fn is_valid_reference(image: &str) -> bool {
    if image.is_empty() || image.len() > 255 {
        return false;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && hex.len() >= 32
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        });
        if !ok {
            return false;
        }
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].split_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return false;
        }
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() > 1 {
        let host = parts[0];
        if host.contains('.') || host.contains(':') || host == "localhost" {
            let ok = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
            if !ok {
                return false;
            }
            parts.remove(0);
        }
    }
    !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

/// What the kubelet's image manager decides for `image` under `policy`, with `present`
/// the images on the node when air-gapped (`None`: online, everything pulls).
/// Messages as the kubelet and containerd word them (kubelet `images/image_manager.go`,
/// containerd's resolver errors for a registry that does not resolve).
pub(crate) fn pull(
    image: &str,
    policy: &str,
    present: Option<&BTreeSet<String>>,
) -> Result<(), PullFailure> {
    if !is_valid_reference(image) {
        return Err(PullFailure {
            reason: "InvalidImageName",
            message: format!(
                "Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format"
            ),
            backs_off: false,
        });
    }
    let Some(present) = present else {
        return Ok(());
    };
    let full = normalize(image);
    let on_node = present.iter().any(|p| normalize(p) == full);
    match policy {
        "Never" if on_node => Ok(()),
        "Never" => Err(PullFailure {
            reason: "ErrImageNeverPull",
            message: format!(
                "Container image \"{image}\" is not present with pull policy of Never"
            ),
            backs_off: false,
        }),
        "IfNotPresent" if on_node => Ok(()),
        // `Always`, or not on the node: the pull needs the registry, which is out of reach.
        _ => {
            let registry = full.split('/').next().unwrap_or("docker.io");
            let (repo, tag) = full[registry.len() + 1..]
                .rsplit_once([':', '@'])
                .unwrap_or((&full[registry.len() + 1..], "latest"));
            let host = if registry == "docker.io" {
                "registry-1.docker.io"
            } else {
                registry
            };
            let dns = host.split(':').next().unwrap_or(host);
            Err(PullFailure {
                reason: "ErrImagePull",
                message: format!(
                    "rpc error: code = Unknown desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": \
                     failed to do request: Head \"https://{host}/v2/{repo}/manifests/{tag}\": dial tcp: lookup {dns}: no such host"
                ),
                backs_off: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "ghcr.io/kforward/kforward-relay:0.1.0",
            "localhost:5000/a/b:c",
            "registry.corp.example:443/tools/relay@sha256:0123456789abcdef0123456789abcdef",
        ] {
            assert!(is_valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "Nginx",
            "ghcr.io/Kforward/relay",
            "a:",
            "a b",
            "relay::1",
            "-a",
        ] {
            assert!(!is_valid_reference(bad), "{bad}");
        }
    }

    #[test]
    fn normalized_names_match_short_ones() {
        assert_eq!(normalize("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize("kforward/http:1"), "docker.io/kforward/http:1");
        assert_eq!(normalize("ghcr.io/a/b:1"), "ghcr.io/a/b:1");
        assert!(image_is_latest("nginx") && image_is_latest("a/b:latest"));
        assert!(!image_is_latest("localhost:5000/a:1") && !image_is_latest("a@sha256:00"));
    }

    #[test]
    fn air_gapped_pulls_only_what_the_node_has() {
        let has = BTreeSet::from(["kforward/http:1".to_string()]);
        assert_eq!(pull("kforward/http:1", "IfNotPresent", Some(&has)), Ok(()));
        assert_eq!(
            pull("docker.io/kforward/http:1", "Never", Some(&has)),
            Ok(())
        );
        let e = pull("kforward/http:1", "Always", Some(&has)).expect_err("registry needed");
        assert_eq!(e.reason, "ErrImagePull");
        let e = pull(
            "ghcr.io/kforward/kforward-relay:0.1.0",
            "IfNotPresent",
            Some(&has),
        )
        .expect_err("not on the node");
        assert!(
            e.message.contains("lookup ghcr.io: no such host"),
            "{}",
            e.message
        );
        assert_eq!(
            pull("x:1", "Never", Some(&has)).expect_err("never").reason,
            "ErrImageNeverPull"
        );
        assert_eq!(pull("x:1", "Always", None), Ok(()));
        assert_eq!(
            pull("X:1", "Always", None).expect_err("bad").reason,
            "InvalidImageName"
        );
    }
}
