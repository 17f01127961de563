//! The cost of metrics: the manifest GET load once more on a Berth restarted with
//! `--metrics false` on the same data, next to the row measured with metrics on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::http::{self, BoxError, Load, Target};
use crate::{CONNS, DOCKER_MANIFEST, servers};

/// `CONNS` connections GETting the ~1 KB manifest `bench/small:app` for `duration`.
pub async fn manifest_load(target: &Target, duration: Duration) -> Result<Load, BoxError> {
    let accept = format!("{DOCKER_MANIFEST}, application/vnd.oci.image.manifest.v1+json");
    let get =
        Arc::new(move |_| (Method::GET, "/v2/bench/small/manifests/app".into(), vec![("accept", accept.clone())]));
    http::load(target, CONNS, duration, get, StatusCode::OK).await
}

/// Starts Berth on the data the run left in `dir` with metrics off, runs the manifest
/// load and records `manifest_nometrics_rps` and `metrics_ratio` (the run's `manifest_rps`
/// ÷ this) in `results`.
pub async fn measure(
    bin: &Path,
    dir: &Path,
    admin_password: &str,
    seconds: f64,
    results: &mut BTreeMap<&'static str, Vec<f64>>,
) -> Result<(), BoxError> {
    eprintln!("  … manifest GET load, metrics off (Berth restarted on the same data)");
    let server = servers::berth_with(bin, dir, None, admin_password, &[("BERTH_METRICS", "false")]);
    let off = manifest_load(&server.target(), Duration::from_secs_f64(seconds)).await?.rps();
    drop(server);
    let on = results.get("manifest_rps").and_then(|v| v.last()).copied().unwrap_or(f64::NAN);
    eprintln!("  manifest_nometrics_rps: {off:.0}");
    results.entry("manifest_nometrics_rps").or_default().push(off);
    results.entry("metrics_ratio").or_default().push(100.0 * on / off);
    Ok(())
}
