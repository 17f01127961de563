//! A request body that fails when its client goes quiet: no bytes for the idle timeout
//! while the handler waits for them, and the body yields an error, which ends the
//! request like any broken body (an upload append is then not acknowledged and the
//! upload stays where it was). Not a limit on total time: a slow but steady client
//! goes on.
//!
//! Only the client's silence counts: the clock runs from when the handler asks for the
//! next chunk and none is there, so a handler slow to read (the disk behind an append)
//! never times its client out.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error an idle body ends with.
#[derive(Debug)]
pub struct BodyIdle(Duration);

impl std::fmt::Display for BodyIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client sent no body bytes for {:?}", self.0)
    }
}

impl std::error::Error for BodyIdle {}

/// `body`, failing after `idle` without bytes. A body with nothing to read is returned
/// as it is (no timer for a GET).
pub fn with_idle_timeout(body: Body, idle: Duration) -> Body {
    if body.is_end_stream() {
        return body;
    }
    Body::new(IdleBody {
        inner: body,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
        waiting_since: None,
        done: false,
    })
}

struct IdleBody {
    inner: Body,
    idle: Duration,
    /// Fires at or before the deadline; re-armed when it fires early (the timer is reset
    /// only then, not for every chunk).
    timer: Pin<Box<Sleep>>,
    /// When the handler found no chunk ready; `None` after a chunk.
    waiting_since: Option<Instant>,
    done: bool,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting_since = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = *this.waiting_since.get_or_insert_with(Instant::now) + this.idle;
        loop {
            ready!(this.timer.as_mut().poll(cx));
            if Instant::now() >= deadline {
                this.done = true;
                return Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle)))));
            }
            this.timer.as_mut().reset(deadline);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::sync::mpsc;

    const IDLE: Duration = Duration::from_millis(200);

    /// A streaming body fed by the returned sender, as a client's bytes would arrive.
    fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        (tx, with_idle_timeout(Body::from_stream(stream), IDLE))
    }

    /// Reads `body` to its end, sleeping `pause` after each chunk; the bytes, or the error.
    async fn read_all(body: Body, pause: Duration) -> Result<usize, String> {
        let mut stream = body.into_data_stream();
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            n += chunk.map_err(|e| e.to_string())?.len();
            tokio::time::sleep(pause).await;
        }
        Ok(n)
    }

    #[tokio::test]
    async fn a_body_silent_past_the_idle_timeout_fails() {
        let (tx, body) = channel_body();
        tx.send(Bytes::from_static(b"some")).await.unwrap();
        let start = Instant::now();
        let result = read_all(body, Duration::ZERO).await;
        assert!(result.as_ref().is_err_and(|e| e.contains("no body bytes")), "{result:?}");
        assert!(start.elapsed() >= IDLE, "failed after {:?}", start.elapsed());
        drop(tx);
    }

    #[tokio::test]
    async fn a_slow_but_steady_body_outlasts_the_idle_timeout() {
        let (tx, body) = channel_body();
        let client = tokio::spawn(async move {
            for _ in 0..8 {
                tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
                tokio::time::sleep(IDLE / 2).await;
            }
        });
        assert_eq!(read_all(body, Duration::ZERO).await, Ok(80));
        client.await.unwrap();
    }

    #[tokio::test]
    async fn a_handler_slow_to_read_does_not_time_its_client_out() {
        let (tx, body) = channel_body();
        for _ in 0..3 {
            tx.send(Bytes::from_static(b"0123456789")).await.unwrap();
        }
        drop(tx);
        // Each pause is longer than the idle timeout, but a chunk is always waiting.
        assert_eq!(read_all(body, IDLE * 2).await, Ok(30));
    }
}
