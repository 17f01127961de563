//! One upload, two requests: the second waits for the first to end (it is not refused
//! while the first is still writing), and a chunk that arrives again after it landed is
//! told where the upload is, so a client retrying after a timeout can go on.

use std::io::Write;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use crate::api::{Api, assert_error, header, random_bytes};
use crate::support::TestServer;

#[tokio::test]
async fn a_chunk_retried_after_it_landed_gets_416_saying_where_the_upload_is() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    let bytes = random_bytes(1000, 3);
    let loc = api.start_upload("retry/chunk").await;
    let patch = || api.req(Method::PATCH, &loc).header("content-range", "0-999").body(bytes.clone()).send();
    assert_eq!(patch().await.unwrap().status(), StatusCode::ACCEPTED);
    // The client never saw that answer (a timeout) and sends the chunk again.
    let r = patch().await.unwrap();
    assert_eq!(header(&r, "range").as_deref(), Some("0-999"));
    assert_eq!(header(&r, "location").as_deref(), Some(loc.as_str()));
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
}

#[tokio::test]
async fn a_request_on_a_busy_upload_waits_for_the_first_to_end() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    let bytes = random_bytes(2000, 4);
    let loc = api.start_upload("retry/busy").await;

    // The first request sends part of its chunk, pauses, then sends the rest.
    let addr = server.addr;
    let (first_loc, first) = (loc.clone(), bytes.clone());
    let slow = std::thread::spawn(move || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let auth = crate::support::admin().header_line();
        write!(s, "PATCH {first_loc} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\nContent-Length: 2000\r\n\r\n")
            .unwrap();
        s.write_all(&first[..700]).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        s.write_all(&first[700..]).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A second request on the same upload meanwhile: it waits, then finds the upload
    // moved on and says where.
    let started = Instant::now();
    let r = api.req(Method::PATCH, &loc).header("content-range", "0-999").body(bytes[..1000].to_vec()).send().await;
    let r = r.unwrap();
    let waited = started.elapsed();
    let first = slow.join().unwrap();
    assert!(first.starts_with("HTTP/1.1 202"), "{first}");
    assert!(waited >= Duration::from_millis(400), "answered after {waited:?}, before the first request ended");
    assert_eq!(header(&r, "range").as_deref(), Some("0-1999"));
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
}
