//! The client side of the upload races: one request API over HTTP/1.1 (reqwest, or a raw
//! socket to break a body off) and over HTTP/2 with prior knowledge (the `h2` crate, which
//! can reset a stream mid-body). Bodies go out in pieces with small pauses, so that the
//! server's writer is mid-write when another request lands. Not a general client.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

/// Bytes per piece of a paced body, and the pause between pieces.
const PIECE: usize = 64 * 1024;
const PAUSE: Duration = Duration::from_millis(1);
/// How long a broken request's last bytes get to reach the server before it is broken off.
const SETTLE: Duration = Duration::from_millis(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Holds a body's last piece back: `armed` fires when only that piece is left, and the
/// piece goes out once `release` does. Lets a test land another request exactly as this
/// one's writer ends.
pub struct Gate {
    pub armed: oneshot::Sender<()>,
    pub release: oneshot::Receiver<()>,
}

pub struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub gate: Option<Gate>,
    /// HTTP/2: end the stream with an empty DATA frame after the body, as clients that
    /// stream a body of unknown end do (hyper's, Go's), rather than on the last piece.
    pub empty_end: bool,
}

impl Req {
    pub fn new(method: Method, path: impl Into<String>) -> Req {
        Req { method, path: path.into(), headers: Vec::new(), body: Bytes::new(), gate: None, empty_end: false }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub range: Option<String>,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Reply {
    /// The first error code of an OCI error body, if it is one.
    pub fn code(&self) -> Option<String> {
        self.error_field("code")
    }

    /// The first error's message, if the body is an OCI error.
    pub fn message(&self) -> Option<String> {
        self.error_field("message")
    }

    fn error_field(&self, field: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0][field].as_str().map(str::to_owned)
    }
}

/// A reply, or why none came (the text of the transport error).
pub type Outcome = Result<Reply, String>;

/// A client of one registry over one wire protocol. Over HTTP/2 every request is a stream
/// of one connection (racing requests are concurrent streams); over HTTP/1.1 concurrent
/// requests use their own connections.
#[derive(Clone)]
pub struct Client {
    wire: Wire,
    addr: SocketAddr,
    h1: reqwest::Client,
    h2: Option<h2::client::SendRequest<Bytes>>,
}

impl Client {
    pub async fn connect(wire: Wire, addr: SocketAddr) -> Client {
        let h1 = crate::support::http_client().http1_only().timeout(Duration::from_secs(30)).build().unwrap();
        let h2 = match wire {
            Wire::Http1 => None,
            Wire::Http2 => {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tcp.set_nodelay(true).unwrap();
                // Windows large enough that a blob read back needs few WINDOW_UPDATE round trips.
                let (send, connection) = h2::client::Builder::new()
                    .initial_window_size(8 << 20)
                    .initial_connection_window_size(16 << 20)
                    .handshake(tcp)
                    .await
                    .expect("h2c handshake (prior knowledge)");
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!("h2 connection ended: {e}");
                    }
                });
                Some(send)
            }
        };
        Client { wire, addr, h1, h2 }
    }

    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Sends a request, its body paced, and reads the whole reply.
    pub async fn send(&self, req: Req) -> Outcome {
        match self.wire {
            Wire::Http1 => self.send_h1(req).await,
            Wire::Http2 => self.send_h2(req).await,
        }
    }

    /// Sends a request declaring its whole body but only the first `keep` bytes of it,
    /// then breaks it off: HTTP/1.1 closes the socket, HTTP/2 resets the stream (CANCEL).
    pub async fn send_broken(&self, req: Req, keep: usize) {
        let pieces = paced(req.body.slice(..keep), None);
        match self.wire {
            Wire::Http1 => {
                let mut sock = tokio::net::TcpStream::connect(self.addr).await.expect("connect");
                let auth = crate::support::admin().header_line();
                let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\n{auth}", req.method, req.path, self.addr);
                for (name, value) in &req.headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
                sock.write_all(head.as_bytes()).await.expect("send request head");
                let mut pieces = pieces;
                while let Some(piece) = pieces.recv().await {
                    if sock.write_all(&piece.bytes).await.is_err() {
                        return; // The server gave up first; broken either way.
                    }
                }
                tokio::time::sleep(SETTLE).await;
                drop(sock);
            }
            Wire::Http2 => {
                let (_response, stream) = self.open_h2(&req).await.expect("open an HTTP/2 stream");
                let _ = feed_h2(stream, pieces, End::Reset).await;
            }
        }
    }

    async fn send_h1(&self, req: Req) -> Outcome {
        let mut builder = self.h1.request(req.method.clone(), format!("http://{}{}", self.addr, req.path));
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if !req.body.is_empty() {
            let pieces = paced(req.body.clone(), req.gate);
            let stream = futures_util::stream::unfold(pieces, |mut rx| async move {
                rx.recv().await.map(|piece| (Ok::<Bytes, std::io::Error>(piece.bytes), rx))
            });
            builder = builder.header("content-length", req.body.len()).body(reqwest::Body::wrap_stream(stream));
        }
        let r = builder.send().await.map_err(|e| format!("{e:?}"))?;
        let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (status, range, location) = (r.status().as_u16(), header("range"), header("location"));
        let body = r.bytes().await.map_err(|e| format!("{e:?}"))?;
        Ok(Reply { status, range, location, body })
    }

    async fn open_h2(&self, req: &Req) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
        let mut builder =
            axum::http::Request::builder().method(req.method.clone()).uri(format!("http://{}{}", self.addr, req.path));
        builder = builder.header("authorization", crate::support::admin().basic());
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        if !req.body.is_empty() {
            builder = builder.header("content-length", req.body.len());
        }
        let mut send = self.h2.clone().expect("an HTTP/2 client").ready().await?;
        send.send_request(builder.body(()).unwrap(), req.body.is_empty())
    }

    async fn send_h2(&self, mut req: Req) -> Outcome {
        let (response, stream) = self.open_h2(&req).await.map_err(|e| format!("{e:?}"))?;
        if !req.body.is_empty() {
            // Alongside the reply: a server may answer (and stop the stream) before the body ends.
            let end = if req.empty_end { End::EmptyFrame } else { End::LastPiece };
            tokio::spawn(feed_h2(stream, paced(req.body.clone(), req.gate.take()), end));
        }
        let r = response.await.map_err(|e| format!("{e:?}"))?;
        let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (status, range, location) = (r.status().as_u16(), header("range"), header("location"));
        let mut recv = r.into_body();
        let mut body = BytesMut::new();
        while let Some(data) = recv.data().await {
            let data = data.map_err(|e| format!("{e:?}"))?;
            let _ = recv.flow_control().release_capacity(data.len());
            body.extend_from_slice(&data);
        }
        Ok(Reply { status, range, location, body: body.freeze() })
    }
}

/// Part of a paced body.
struct Piece {
    bytes: Bytes,
    last: bool,
}

/// A body in pieces of [`PIECE`] bytes, [`PAUSE`] apart, fed by a task of its own.
fn paced(body: Bytes, mut gate: Option<Gate>) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut rest = body;
        while !rest.is_empty() {
            let piece = rest.split_to(PIECE.min(rest.len()));
            if rest.is_empty()
                && let Some(gate) = gate.take()
            {
                let _ = gate.armed.send(());
                let _ = gate.release.await;
            }
            if tx.send(Piece { bytes: piece, last: rest.is_empty() }).await.is_err() {
                return;
            }
            if !rest.is_empty() {
                tokio::time::sleep(PAUSE).await;
            }
        }
    });
    rx
}

/// How an HTTP/2 request body ends.
enum End {
    /// END_STREAM on the last piece's last DATA frame.
    LastPiece,
    /// An empty DATA frame with END_STREAM after the last piece.
    EmptyFrame,
    /// RST_STREAM (CANCEL) after the last piece.
    Reset,
}

/// Sends pieces on an HTTP/2 stream as flow control allows, so that each piece has really
/// left when the next one is due; then ends the stream or resets it.
async fn feed_h2(
    mut stream: h2::SendStream<Bytes>,
    mut pieces: mpsc::Receiver<Piece>,
    end: End,
) -> Result<(), h2::Error> {
    while let Some(Piece { bytes: mut piece, last }) = pieces.recv().await {
        while !piece.is_empty() {
            stream.reserve_capacity(piece.len());
            let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(granted) => granted?,
                None => return Ok(()),
            };
            if granted == 0 {
                continue;
            }
            let part = piece.split_to(granted.min(piece.len()));
            let eos = last && piece.is_empty() && matches!(end, End::LastPiece);
            stream.send_data(part, eos)?;
        }
    }
    match end {
        End::LastPiece => Ok(()),
        End::EmptyFrame => stream.send_data(Bytes::new(), true),
        End::Reset => {
            tokio::time::sleep(SETTLE).await;
            stream.send_reset(h2::Reason::CANCEL);
            Ok(())
        }
    }
}
