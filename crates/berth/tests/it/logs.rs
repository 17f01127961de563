//! The log of a `berth serve` process with `--log-format json` (`BERTH_LOG_FORMAT`): every
//! line is a JSON object; each request has one access-log line carrying the request id
//! the response's `X-Request-Id` had (a sane incoming id is kept, another is replaced);
//! an error is logged once, with that id; no password, Basic header, token or token
//! request's query reaches the log. On the stores `BERTH_TEST_BACKEND` names.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Backend, BerthProcess, Creds, admin, bearer_token, client_as, client_authorized};

/// The JSON lines logged so far, each parsed (a line that is not JSON fails the test).
fn lines(process: &BerthProcess) -> Vec<Value> {
    let log = process.log();
    log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))).collect()
}

/// The access-log lines of request `id`, waiting (briefly) for the first: a line is
/// written when its response body ends, which may come after the client has it.
async fn access_lines(process: &BerthProcess, id: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<Value> =
            lines(process).into_iter().filter(|l| l["target"] == "berth::access" && l["request_id"] == id).collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers().get("x-request-id").expect("every response names its request").to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_the_response_request_id_and_no_credentials() {
    let backend = Backend::from_env();
    let dir = tempfile::tempdir().unwrap();
    // Debug for Berth's own crates: refused requests are logged at debug.
    let envs = [
        ("BERTH_LOG_FORMAT", "json"),
        ("BERTH_LOG", "info,berth=debug,berth_server=debug,berth_access=debug,berth_jobs=debug"),
    ];
    let server = backend.spawn_env(&dir.path().join("data"), &envs);
    let base = server.url();
    let admin_client = client_as(Some(&admin())).build().unwrap();

    // An incoming id that is sane is kept.
    let r = admin_client.get(format!("{base}/v2/")).header("X-Request-Id", "ci-run-42.step:7").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(request_id(&r), "ci-run-42.step:7");
    let line = access_lines(&server, "ci-run-42.step:7").await;
    assert_eq!(line.len(), 1, "{line:?}");
    let line = &line[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v2/");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_sent"], 2);
    assert_eq!(line["principal"], "admin");
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{line}");

    // One that is not is replaced by a generated one.
    let r = admin_client.get(format!("{base}/v2/")).header("X-Request-Id", "two words").send().await.unwrap();
    let generated = request_id(&r);
    assert_ne!(generated, "two words");
    assert_eq!(access_lines(&server, &generated).await.len(), 1);

    // A 404: its access line, and the refusal logged once, in the request's span.
    let r = admin_client.get(format!("{base}/v2/library/absent/manifests/latest")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let missing = request_id(&r);
    let line = access_lines(&server, &missing).await;
    assert_eq!(line.len(), 1, "{line:?}");
    assert_eq!(line[0]["status"], 404);
    let refusals: Vec<Value> = lines(&server).into_iter().filter(|l| l["span"]["id"] == missing.as_str()).collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["message"], "request refused");
    assert_eq!(refusals[0]["level"], "DEBUG");

    // Secrets in: a wrong password, a token request (credentials and a query), a bearer token.
    let wrong = Creds::new("admin", "wrong-password-9f3a1c");
    let r = client_as(Some(&wrong)).build().unwrap().get(format!("{base}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let refused = request_id(&r);
    let token = bearer_token(&base, Some(&admin()), "repository:library/secretive:pull").await;
    let bearer = client_authorized(Some(format!("Bearer {token}"))).build().unwrap();
    let r = bearer.get(format!("{base}/v2/library/secretive/tags/list")).send().await.unwrap();
    let last = request_id(&r);
    let line = access_lines(&server, &last).await;
    assert_eq!(line.len(), 1, "{line:?}");
    assert_eq!(line[0]["principal"], "admin", "{line:?}");
    assert_eq!(access_lines(&server, &refused).await[0]["status"], 401);

    // Every line parses, and none holds a secret or the token request's query.
    let log = server.log();
    assert!(lines(&server).len() > 8);
    let basic = base64::engine::general_purpose::STANDARD.encode(admin().pair());
    let wrong_basic = base64::engine::general_purpose::STANDARD.encode(wrong.pair());
    for secret in
        [admin().password.as_str(), &basic, &wrong.password, &wrong_basic, &token, "scope=", "Basic ", "Bearer "]
    {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
    let token_lines: Vec<Value> = lines(&server).into_iter().filter(|l| l["path"] == "/token").collect();
    assert_eq!(token_lines.len(), 1, "{token_lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_logged_once_at_error_with_its_cause_and_request_id() {
    let backend = Backend::from_env();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = backend.spawn_env(&data, &[("BERTH_LOG_FORMAT", "json")]);
    let api = crate::api::Api::new(server.url());
    let digest = api.push_blob("library/lost", &crate::api::random_bytes(4096, 31)).await;
    let storage = backend.storage(&data);
    let (_, entry) = storage.blobs_by_digest().await.into_iter().find(|(d, _)| *d == digest).expect("the blob's bytes");
    // The bytes go, the record stays: the GET fails inside the server.
    storage.remove(&entry).await;

    let r = api.send(reqwest::Method::GET, &format!("/v2/library/lost/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = request_id(&r);
    let line = access_lines(&server, &id).await;
    assert_eq!(line.len(), 1, "{line:?}");
    assert_eq!(line[0]["status"], 500);
    let errors: Vec<Value> = lines(&server).into_iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["span"]["id"], id.as_str(), "{errors:?}");
    assert_eq!(errors[0]["message"], "request failed");
    // The cause is in the log (it is not in the response).
    let cause = errors[0]["error"].as_str().unwrap();
    assert!(cause.starts_with("UNKNOWN: internal error (") && cause.ends_with(')'), "{cause}");
}
