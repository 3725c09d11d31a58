//! The real kubectl (1.35) applies (validation on), rolls out, undoes, scales and
//! port-forwards a Deployment and a StatefulSet against the testkit, and its output has
//! the shapes a real cluster gives (the strings are kubectl's own, from
//! `staging/src/k8s.io/kubectl/pkg/polymorphichelpers/{rollout_status,history,rollback}.go`).

use std::collections::BTreeSet;
use std::path::Path;

use kforward_testkit::{Cluster, DEMO_NAMESPACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kubectl::{Kubectl, http_get_pod_name, port_forward, rows, setup};
use crate::{WAIT, bounded, name, pod_ip};

fn deployment_yaml(image: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: {DEMO_NAMESPACE}
spec:
  replicas: 2{extra}
  selector:
    matchLabels: {{app: api}}
  template:
    metadata:
      labels: {{app: api}}
    spec:
      containers:
      - name: api
        image: {image}
        ports:
        - {{name: http, containerPort: 8080}}
"
    )
}

fn statefulset_yaml(image: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: pg
  namespace: {DEMO_NAMESPACE}
spec:
  clusterIP: None
  selector: {{app: pg}}
  ports:
  - {{name: pg, port: 5432}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: pg
  namespace: {DEMO_NAMESPACE}
spec:
  serviceName: pg
  replicas: 2
  selector:
    matchLabels: {{app: pg}}
  template:
    metadata:
      labels: {{app: pg}}
    spec:
      containers:
      - name: pg
        image: {image}
        ports:
        - {{name: pg, containerPort: 5432}}
"
    )
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write the manifest");
    path.display().to_string()
}

/// `kubectl rollout status` until it returns; checks every line has one of kubectl's
/// shapes for the kind, and returns the last.
async fn rollout_status(k: &Kubectl, target: &str) -> String {
    let out = k
        .ok(&[
            "rollout",
            "status",
            target,
            "-n",
            DEMO_NAMESPACE,
            "--timeout=25s",
        ])
        .await;
    let lines: Vec<&str> = out.lines().collect();
    for line in &lines[..lines.len().saturating_sub(1)] {
        assert!(
            line.starts_with("Waiting for deployment ")
                || (line.starts_with("Waiting for ") && line.ends_with(" pods to be ready..."))
                || line.starts_with("Waiting for partitioned roll out to finish: ")
                || line.starts_with("Waiting for statefulset spec update to be observed"),
            "unexpected rollout status line {line:?} in {out}"
        );
    }
    lines.last().copied().unwrap_or_default().to_string()
}

/// The revisions `kubectl rollout history` lists, after checking its table's shape.
async fn history(k: &Kubectl, target: &str, printed_as: &str) -> Vec<u32> {
    let out = k
        .ok(&["rollout", "history", target, "-n", DEMO_NAMESPACE])
        .await;
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    assert_eq!(lines.next().map(str::trim), Some(printed_as), "{out}");
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["REVISION", "CHANGE-CAUSE"]),
        "{out}"
    );
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.get(1), Some(&"<none>"), "{out}");
            cols[0]
                .parse()
                .unwrap_or_else(|_| panic!("a revision in {l:?}"))
        })
        .collect()
}

fn ready_images(cluster: &Cluster, selector: &str) -> BTreeSet<String> {
    cluster
        .ready_pods(DEMO_NAMESPACE, selector)
        .into_iter()
        .filter_map(|p| p.spec?.containers.first()?.image.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_rolls_out_undoes_and_scales_a_deployment() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let v1 = write(
        dir.path(),
        "v1.yaml",
        &deployment_yaml("kforward/http:1", ""),
    );
    assert_eq!(
        k.ok(&["apply", "-f", &v1]).await.trim(),
        "deployment.apps/api created"
    );
    assert_eq!(
        rollout_status(&k, "deploy/api").await,
        "deployment \"api\" successfully rolled out"
    );
    // The deployment owns one ReplicaSet, named after the template hash its pods carry.
    let sets = cluster.replicasets(DEMO_NAMESPACE, Some("app=api"));
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let rs_name = rs.metadata.name.clone().expect("a name");
    let deploy = cluster
        .deployment(DEMO_NAMESPACE, "api")
        .expect("the deployment");
    let owner = rs.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].controller),
        ("Deployment", Some(true))
    );
    assert_eq!(Some(owner[0].uid.clone()), deploy.metadata.uid);
    for pod in cluster.pods(DEMO_NAMESPACE, Some("app=api")) {
        let hash = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned();
        assert_eq!(
            Some(format!("api-{}", hash.expect("the hash label"))),
            Some(rs_name.clone())
        );
        let refs = pod.metadata.owner_references.unwrap_or_default();
        assert_eq!(
            (refs[0].kind.as_str(), Some(refs[0].uid.clone())),
            ("ReplicaSet", rs.metadata.uid.clone())
        );
    }

    let v2 = write(
        dir.path(),
        "v2.yaml",
        &deployment_yaml("kforward/http:2", ""),
    );
    assert_eq!(
        k.ok(&["apply", "-f", &v2]).await.trim(),
        "deployment.apps/api configured"
    );
    assert_eq!(
        rollout_status(&k, "deploy/api").await,
        "deployment \"api\" successfully rolled out"
    );
    assert_eq!(
        ready_images(&cluster, "app=api"),
        BTreeSet::from(["kforward/http:2".to_string()])
    );
    assert_eq!(
        history(&k, "deploy/api", "deployment.apps/api").await,
        [1, 2]
    );

    let out = k
        .ok(&["rollout", "undo", "deploy/api", "-n", DEMO_NAMESPACE])
        .await;
    assert_eq!(out.trim(), "deployment.apps/api rolled back");
    rollout_status(&k, "deploy/api").await;
    // Revision 1's ReplicaSet is current again, as revision 3; no third set was made.
    assert_eq!(
        history(&k, "deploy/api", "deployment.apps/api").await,
        [2, 3]
    );
    assert_eq!(
        cluster.replicasets(DEMO_NAMESPACE, Some("app=api")).len(),
        2
    );
    bounded(
        "the old pods to be gone",
        cluster.wait_for("api back on http:1", WAIT, |c| {
            ready_images(c, "app=api") == BTreeSet::from(["kforward/http:1".to_string()])
                && c.pods(DEMO_NAMESPACE, Some("app=api")).len() == 2
        }),
    )
    .await
    .expect("rolled back");
    let out = k
        .ok(&[
            "rollout",
            "undo",
            "deploy/api",
            "-n",
            DEMO_NAMESPACE,
            "--to-revision=3",
        ])
        .await;
    assert_eq!(
        out.trim(),
        "deployment.apps/api skipped rollback (current template already matches revision 3)"
    );

    let out = k
        .ok(&["scale", "deploy/api", "-n", DEMO_NAMESPACE, "--replicas=3"])
        .await;
    assert_eq!(out.trim(), "deployment.apps/api scaled");
    rollout_status(&k, "deploy/api").await;
    assert_eq!(cluster.ready_pods(DEMO_NAMESPACE, "app=api").len(), 3);
    let out = k
        .ok(&["get", "rs", "-n", DEMO_NAMESPACE, "-l", "app=api"])
        .await;
    assert_eq!(
        rows(&out, "NAME"),
        vec![vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"]],
        "{out}"
    );
    let current = rows(&out, "api-");
    assert!(current.iter().any(|r| r[1..4] == ["3", "3", "3"]), "{out}");
    assert!(current.iter().any(|r| r[1..4] == ["0", "0", "0"]), "{out}");

    let (child, port) = port_forward(&k, "deploy/api", "8080", true).await;
    let answered = http_get_pod_name(port).await;
    assert!(answered.starts_with("api-"), "{answered}");
    drop(child);
}

#[tokio::test]
async fn kubectl_apply_refuses_unknown_fields_as_the_api_server_does() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let typo = deployment_yaml("kforward/http:1", "").replace(
        "        image: kforward/http:1\n",
        "        image: kforward/http:1\n        imagez: kforward/http:2\n",
    );
    let path = write(dir.path(), "typo.yaml", &typo);
    let out = k.run(&["apply", "-f", &path], &[]).await;
    assert!(!out.status.success());
    // What a real API server answers (`transformDecodeError` in the create handler).
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "Error from server (BadRequest): error when creating \"{path}\": Deployment in \
             version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown \
             field \"spec.template.spec.containers[0].imagez\""
        )
    );
    assert!(
        cluster.deployment(DEMO_NAMESPACE, "api").is_err(),
        "nothing was created"
    );

    let good = write(
        dir.path(),
        "good.yaml",
        &deployment_yaml("kforward/http:1", ""),
    );
    k.ok(&["apply", "-f", &good]).await;
    let extra = write(
        dir.path(),
        "extra.yaml",
        &deployment_yaml("kforward/http:1", "\n  paused2: true"),
    );
    let out = k.run(&["apply", "-f", &extra], &[]).await;
    assert!(!out.status.success());
    // A patch that leaves an unknown field is a 422 about `patch` (`patch.go`), which
    // kubectl prints as an invalid request.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.starts_with("The request is invalid: patch: Invalid value: \"map[metadata:map[annotations:map[kubectl.kubernetes.io/last-applied-configuration:")
            && said.trim_end().ends_with("spec:map[paused2:true]]\": strict decoding error: unknown field \"spec.paused2\""),
        "{said}"
    );
    // Warn (what `--validate=warn` asks for) drops the field and says so.
    let out = k
        .run(&["apply", "-f", &extra, "--validate=warn"], &[])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Warning: unknown field \"spec.paused2\""
    );
    let stored = serde_json::to_value(cluster.deployment(DEMO_NAMESPACE, "api").expect("api"))
        .expect("json");
    assert!(stored["spec"].get("paused2").is_none(), "{stored}");
}

async fn echo_through(port: u16, msg: &[u8]) {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.expect("read");
        assert_eq!(back, msg);
    };
    bounded("an echo through kubectl", work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_rolls_out_undoes_scales_and_port_forwards_a_statefulset() {
    let Some((cluster, k)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let v1 = write(dir.path(), "v1.yaml", &statefulset_yaml("kforward/echo:1"));
    let out = k.ok(&["apply", "-f", &v1]).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["service/pg created", "statefulset.apps/pg created"]
    );
    assert_eq!(
        rollout_status(&k, "sts/pg").await,
        "partitioned roll out complete: 2 new pods have been updated..."
    );
    let mut names: Vec<String> = cluster
        .pods(DEMO_NAMESPACE, Some("app=pg"))
        .iter()
        .map(name)
        .collect();
    names.sort();
    assert_eq!(names, ["pg-0", "pg-1"]);

    for websockets in [true, false] {
        for target in ["sts/pg", "statefulset/pg", "svc/pg"] {
            let (child, port) = port_forward(&k, target, "5432", websockets).await;
            echo_through(port, format!("through {target}").as_bytes()).await;
            drop(child);
        }
    }

    // A deleted pod comes back under its own name, as a new pod.
    let old = cluster.pod(DEMO_NAMESPACE, "pg-0").expect("pg-0");
    let out = k.ok(&["delete", "pod", "pg-0", "-n", DEMO_NAMESPACE]).await;
    // kubectl 1.35 names the namespace (`delete.go`'s "deleted from %s namespace").
    assert_eq!(
        out.trim(),
        format!("pod \"pg-0\" deleted from {DEMO_NAMESPACE} namespace")
    );
    bounded(
        "pg-0 to come back",
        cluster.wait_for("a new pg-0", WAIT, |c| {
            c.ready_pods(DEMO_NAMESPACE, "app=pg")
                .iter()
                .any(|p| name(p) == "pg-0" && p.metadata.uid != old.metadata.uid)
        }),
    )
    .await
    .expect("pg-0 recreated");
    let new = cluster.pod(DEMO_NAMESPACE, "pg-0").expect("pg-0");
    assert_ne!(pod_ip(&new), pod_ip(&old), "a new pod, a new address");

    let v2 = write(dir.path(), "v2.yaml", &statefulset_yaml("kforward/echo:2"));
    let out = k.ok(&["apply", "-f", &v2]).await;
    assert!(out.contains("statefulset.apps/pg configured"), "{out}");
    assert_eq!(
        rollout_status(&k, "sts/pg").await,
        "partitioned roll out complete: 2 new pods have been updated..."
    );
    assert_eq!(
        ready_images(&cluster, "app=pg"),
        BTreeSet::from(["kforward/echo:2".to_string()])
    );
    assert_eq!(history(&k, "sts/pg", "statefulset.apps/pg").await, [1, 2]);
    let out = k
        .ok(&["rollout", "undo", "sts/pg", "-n", DEMO_NAMESPACE])
        .await;
    assert_eq!(out.trim(), "statefulset.apps/pg rolled back");
    rollout_status(&k, "sts/pg").await;
    assert_eq!(history(&k, "sts/pg", "statefulset.apps/pg").await, [2, 3]);
    assert_eq!(
        ready_images(&cluster, "app=pg"),
        BTreeSet::from(["kforward/echo:1".to_string()])
    );

    let out = k
        .ok(&["scale", "sts/pg", "-n", DEMO_NAMESPACE, "--replicas=3"])
        .await;
    assert_eq!(out.trim(), "statefulset.apps/pg scaled");
    rollout_status(&k, "sts/pg").await;
    let out = k.ok(&["get", "sts", "pg", "-n", DEMO_NAMESPACE]).await;
    assert_eq!(
        rows(&out, "NAME"),
        vec![vec!["NAME", "READY", "AGE"]],
        "{out}"
    );
    assert_eq!(&rows(&out, "pg")[0][..2], ["pg", "3/3"], "{out}");
    let mut names: Vec<String> = cluster
        .pods(DEMO_NAMESPACE, Some("app=pg"))
        .iter()
        .map(name)
        .collect();
    names.sort();
    assert_eq!(names, ["pg-0", "pg-1", "pg-2"]);
    k.ok(&["scale", "sts/pg", "-n", DEMO_NAMESPACE, "--replicas=1"])
        .await;
    bounded(
        "pg-1 and pg-2 to go",
        cluster.wait_for("only pg-0 left", WAIT, |c| {
            c.pods(DEMO_NAMESPACE, Some("app=pg"))
                .iter()
                .map(name)
                .collect::<Vec<_>>()
                == ["pg-0"]
        }),
    )
    .await
    .expect("scaled down from the highest ordinal");
}
