//! The cost of the outbox: every manifest push writes its `artifact.pushed` event in its
//! own transaction, one more row per push. Measured like metrics (`metrics_off.rs`): Berth
//! restarted on the run's data with the outbox on, off, off, on (the mirrored order
//! cancels a steady drift), each side's figure the mean of its two loads. Off is
//! `BERTH_BENCH_OUTBOX_OFF=1`, a switch that exists for this measurement only.
//!
//! The load: `PUT_CONNS` connections each pushing new manifests into `bench/small` for the
//! load's time, a tag each: the `app` manifest with an annotation that makes every body,
//! and so every digest, new (its blobs are there already), i.e. what a CI push costs once
//! its layers are uploaded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::http::{BoxError, Conn, Target, empty};
use crate::image::{DOCKER_MANIFEST, put_manifest};

/// Concurrent pushers (a busy CI).
const PUT_CONNS: usize = 16;

/// Manifest PUTs per second over `duration`, each a new manifest tagged `o<side>-<n>`.
async fn put_load(target: &Target, template: &Value, side: usize, duration: Duration) -> Result<f64, BoxError> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for worker in 0..PUT_CONNS {
        let (target, template) = (target.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&target).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let tag = format!("o{side}-{worker}-{n}");
                let mut body = template.clone();
                body["annotations"] = serde_json::json!({ "bench.berth.io/push": tag });
                put_manifest(&mut c, "bench/small", &tag, &serde_json::to_vec(&body)?).await?;
                n += 1;
            }
            Ok::<u64, BoxError>(n)
        }));
    }
    let mut pushes = 0;
    for task in tasks {
        pushes += task.await??;
    }
    Ok(pushes as f64 / start.elapsed().as_secs_f64())
}

/// Starts Berth on the data the run left in `dir` with the outbox on, off, off, then on,
/// runs the push load on each and records `push_outbox_rps`, `push_nooutbox_rps` and
/// `outbox_ratio` (on ÷ off) in `results`.
pub async fn measure(
    bin: &Path,
    dir: &Path,
    admin_password: &str,
    seconds: f64,
    results: &mut BTreeMap<&'static str, Vec<f64>>,
) -> Result<(), BoxError> {
    let off_env = [("BERTH_BENCH_OUTBOX_OFF", "1")];
    let [on, off] = crate::metrics_off::mirrored(bin, dir, admin_password, (&[], &off_env), async |server, i| {
        eprintln!("  … manifest PUT load, outbox {} (Berth restarted on the same data)", i == 0 || i == 3);
        let target = server.target();
        let mut c = Conn::open(&target).await?;
        let reply = c
            .expect(
                Method::GET,
                "/v2/bench/small/manifests/app",
                &[("accept", DOCKER_MANIFEST)],
                empty(),
                StatusCode::OK,
            )
            .await?;
        let template: Value = serde_json::from_slice(&reply.head)?;
        put_load(&target, &template, i, Duration::from_secs_f64(seconds)).await
    })
    .await?;
    eprintln!("  push_outbox_rps: {on:.0}\n  push_nooutbox_rps: {off:.0}");
    results.entry("push_outbox_rps").or_default().push(on);
    results.entry("push_nooutbox_rps").or_default().push(off);
    results.entry("outbox_ratio").or_default().push(100.0 * on / off);
    Ok(())
}
