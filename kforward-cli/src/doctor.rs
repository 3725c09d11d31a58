//! `kforward doctor`: the core's checks as a table (or one JSON object), and an exit code
//! that is 0 only when everything the asked-for features need is there.

use kforward_core::KubeconfigSource;
use kforward_core::doctor::{DoctorOptions, Report, Status, diagnose};
use kforward_core::relay::RelayOptions;

use crate::args::{DoctorArgs, Output};

/// Runs the checks and prints the report.
///
/// # Errors
///
/// Bad relay flags, or (after the report is printed) the checks that failed.
pub async fn run(a: DoctorArgs) -> anyhow::Result<()> {
    let relay = if a.relay {
        let mut o = RelayOptions::default();
        crate::relay::apply(&a.relay_pod, &mut o)?;
        Some(o)
    } else {
        None
    };
    let src = KubeconfigSource {
        path: a.cluster.kubeconfig.clone(),
        context: a.cluster.context.clone(),
    };
    let opts = DoctorOptions {
        namespace: a.cluster.namespace.clone(),
        relay,
        request_timeout: a.request_timeout,
    };
    let report = diagnose(&src, &opts).await;
    match a.output {
        Output::Json => println!("{}", report.to_json()),
        Output::Text => print!("{}", table(&report)),
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| c.name.as_str())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} check{} failed: {}",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        failed.join(", ")
    );
    Ok(())
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Pass => "ok",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Skip => "skip",
    }
}

/// The report as a table: one line per check, its status, and what it found.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    if !r.server.is_empty() {
        out.push_str(&format!(
            "context {:?}, server {}, namespace {:?}\n\n",
            r.context, r.server, r.namespace
        ));
    }
    let width = r
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max("CHECK".len());
    out.push_str(&format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "STATUS"));
    for c in &r.checks {
        out.push_str(&format!(
            "{:<width$}  {:<6}  {}\n",
            c.name,
            mark(c.status),
            c.detail
        ));
    }
    let count = |s: Status| r.checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "\n{}: {} ok, {} warnings, {} failed, {} skipped\n",
        if r.ok() { "ok" } else { "NOT OK" },
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip),
    ));
    out
}
