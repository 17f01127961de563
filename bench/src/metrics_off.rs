//! The cost of metrics: the manifest GET load on a Berth restarted on the data the run
//! left, with metrics on and with `--metrics false`, in the order on, off, off, on, each
//! side's figure the mean of its two loads. Both sides start alike: compared with the
//! run's own manifest row instead, which runs early, after the 1 GiB pushes, while the
//! disk still writes them back, metrics "cost" 11–19 % (every run of a full benchmark),
//! against 2 % in a profile of the same load. Measured once each, on first, the side
//! measured first lost to the machine settling after the run's other loads (on ÷ off
//! 78.7–95.9 % at 82ffe14); the mirrored order cancels a steady drift.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::http::{self, BoxError, Load, Target};
use crate::image::DOCKER_MANIFEST;
use crate::params::CONNS;
use crate::servers;

/// `CONNS` connections GETting the ~1 KB manifest `bench/small:app` for `duration`.
pub async fn manifest_load(target: &Target, duration: Duration) -> Result<Load, BoxError> {
    let accept = format!("{DOCKER_MANIFEST}, application/vnd.oci.image.manifest.v1+json");
    let get =
        Arc::new(move |_| (Method::GET, "/v2/bench/small/manifests/app".into(), vec![("accept", accept.clone())]));
    http::load(target, CONNS, duration, get, StatusCode::OK).await
}

/// Starts Berth on the data the run left in `dir` with metrics on, off, off, then on,
/// runs the manifest load on each and records `manifest_metrics_rps`,
/// `manifest_nometrics_rps` (each the mean of its two loads) and `metrics_ratio` (on ÷
/// off) in `results`, and the first restart's start-up time as `restart`.
pub async fn measure(
    bin: &Path,
    dir: &Path,
    admin_password: &str,
    seconds: f64,
    results: &mut BTreeMap<&'static str, Vec<f64>>,
) -> Result<(), BoxError> {
    let mut restart = None;
    let (on_env, off_env) = ([("BERTH_METRICS", "true")], [("BERTH_METRICS", "false")]);
    let [on, off] = mirrored(bin, dir, admin_password, (&on_env, &off_env), async |server, i| {
        eprintln!("  … manifest GET load, metrics {} (Berth restarted on the same data)", i == 0 || i == 3);
        if i == 0 {
            restart = Some(server.startup.as_secs_f64() * 1000.0);
        }
        Ok(manifest_load(&server.target(), Duration::from_secs_f64(seconds)).await?.rps())
    })
    .await?;
    if let Some(ms) = restart {
        eprintln!("  restart: {ms:.1}");
        results.entry("restart").or_default().push(ms);
    }
    eprintln!("  manifest_metrics_rps: {on:.0}\n  manifest_nometrics_rps: {off:.0}");
    results.entry("manifest_metrics_rps").or_default().push(on);
    results.entry("manifest_nometrics_rps").or_default().push(off);
    results.entry("metrics_ratio").or_default().push(100.0 * on / off);
    Ok(())
}

/// Environment variables a Berth is started with.
type Env<'a> = &'a [(&'a str, &'a str)];

/// Berth started on the data the run left in `dir` four times, with `env.0` in its
/// environment for the 1st and 4th start and `env.1` for the 2nd and 3rd (the mirrored
/// order cancels a steady drift), `load` run on each (given the start's index): the mean
/// of each side's two figures, `[with env.0, with env.1]`.
pub async fn mirrored(
    bin: &Path,
    dir: &Path,
    admin_password: &str,
    env: (Env<'_>, Env<'_>),
    mut load: impl AsyncFnMut(&servers::Server, usize) -> Result<f64, BoxError>,
) -> Result<[f64; 2], BoxError> {
    let mut sides = [0.0; 2];
    for (i, side) in [0, 1, 1, 0].into_iter().enumerate() {
        let server = servers::berth_with(bin, dir, None, admin_password, if side == 0 { env.0 } else { env.1 });
        sides[side] += load(&server, i).await? / 2.0;
        drop(server);
    }
    Ok(sides)
}
