//! Test data shared by the config tests: a kftray export and a helper for error lists.

use super::FieldError;

/// A kftray export as its UI writes it: ids, nulls, empty strings, extra settings.
pub(super) const KFTRAY_EXPORT: &str = r#"[
  {
    "id": 1,
    "service": "argocd-server",
    "namespace": "argocd",
    "local_port": 8443,
    "remote_port": 443,
    "context": "kind-kftray",
    "workload_type": "service",
    "protocol": "tcp",
    "remote_address": "",
    "local_address": "127.0.0.1",
    "auto_loopback_address": false,
    "alias": "argocd",
    "domain_enabled": false,
    "kubeconfig": "default",
    "target": "",
    "http_logs_enabled": false,
    "http_logs_max_file_size": 10485760,
    "http_logs_retention_days": 7
  },
  {
    "id": 2,
    "service": null,
    "namespace": "default",
    "local_port": 5432,
    "remote_port": 5432,
    "context": "kind-kftray",
    "workload_type": "proxy",
    "protocol": "TCP",
    "remote_address": "postgres.prod.internal",
    "local_address": null,
    "auto_loopback_address": true,
    "alias": "pg",
    "domain_enabled": true,
    "kubeconfig": null,
    "target": null,
    "http_logs_enabled": null
  },
  {
    "id": 3,
    "service": "nginx-7d9c-abcde",
    "namespace": "web",
    "local_port": "8080",
    "remote_port": "80",
    "context": "kind-kftray",
    "workload_type": "pod",
    "protocol": "tcp",
    "alias": null,
    "target": "app.kubernetes.io/name=nginx,tier in (frontend)"
  },
  {
    "service": "kube-dns",
    "namespace": "kube-system",
    "local_port": 5353,
    "remote_port": 53,
    "context": "kind-kftray",
    "workload_type": null,
    "protocol": "udp",
    "alias": "dns",
    "kubeconfig": "/home/dev/.kube/kind"
  },
  {
    "service": "redis-0",
    "namespace": "cache",
    "local_port": 0,
    "remote_port": 6379,
    "workload_type": "Pod",
    "protocol": "tcp",
    "local_address": "127.0.0.2"
  }
]"#;

/// The fields that errors name, in their order.
pub(super) fn fields(errors: &[FieldError]) -> Vec<&'static str> {
    errors.iter().map(|e| e.field).collect()
}
