//! Serving a blob file as a stream of chunks read with `pread`, never memory-mapped: a
//! disk error or a file shorter than recorded fails that one response, never the process.
//! Not the store's bookkeeping (that is `fs.rs`).
//!
//! Bytes the page cache holds are read on the task that sends them, with
//! `preadv2(RWF_NOWAIT)`, which copies what is cached and never waits for the disk: no
//! handoff to another thread, and the chunk is still in the CPU's cache when the socket
//! write copies it out. A read that would wait (pages not cached, or a system without
//! `RWF_NOWAIT`) runs on a blocking thread instead, so a cold page never stalls the async
//! runtime. Reading ahead is the kernel's (the file is opened with `POSIX_FADV_SEQUENTIAL`,
//! and a `RWF_NOWAIT` read that reaches the readahead mark starts the next window), so a
//! response holds no read-ahead buffer: it reads one [`SERVE_CHUNK`] when the server asks
//! for the next, into a buffer from a pool of at most [`POOL_MAX`].
//!
//! Not zero-copy: hyper has no `sendfile`, and splicing the file into the socket beneath
//! it would mean writing behind its HTTP/1 framing (and never for HTTP/2).

use std::fs::File;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use tokio::task::JoinHandle;

use crate::{ByteStream, StorageError};

/// What one read of a served blob fetches. Small enough that the bytes `pread` copied are
/// still in the core's L2 cache when the socket write copies them out (measured on a
/// 2-core VM, server and client pinned to one core: 256 KiB needs about 0.35 s of server
/// CPU per GiB sent, 1 MiB chunks read on blocking threads about 0.9 s).
pub(super) const SERVE_CHUNK: usize = 256 << 10;

/// Serving buffers kept for reuse: a fresh buffer costs page faults for every byte (on a
/// VM whose freed memory goes back to the host, much more than the copy it holds); a
/// reused one costs none. At most this many are kept.
const POOL_MAX: usize = 64;

/// Reads below this size get a buffer of their own (the allocator reuses small ones).
const POOLED_AT: usize = 64 << 10;

fn pool() -> &'static Mutex<Vec<Vec<u8>>> {
    static POOL: std::sync::OnceLock<Mutex<Vec<Vec<u8>>>> = std::sync::OnceLock::new();
    POOL.get_or_init(Mutex::default)
}

/// A chunk read from a blob file, in a pooled buffer that goes back to the pool once the
/// chunk is sent.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = pool().lock().unwrap();
        if pool.len() < POOL_MAX {
            let mut buf = std::mem::take(&mut self.0);
            buf.clear();
            pool.push(buf);
        }
    }
}

/// Whether a read may wait for the disk (on a blocking thread) or must not (on the
/// runtime: it then takes only what the page cache holds).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Wait {
    Yes,
    No,
}

/// Reads up to `len` bytes at `at` (at most [`SERVE_CHUNK`]). With [`Wait::Yes`] all of
/// them or fails (`UnexpectedEof` if the file ends first); with [`Wait::No`] as many as
/// the page cache holds from `at` on, at least one, or fails with `WouldBlock` if it holds
/// none. Reads into a buffer it never zeroes: the kernel writes every byte it counts.
pub(super) fn read(file: &File, at: u64, len: usize, wait: Wait) -> io::Result<Bytes> {
    debug_assert!(len <= SERVE_CHUNK);
    let pooled = len >= POOLED_AT;
    let mut buf = if !pooled {
        Vec::with_capacity(len)
    } else {
        pool().lock().unwrap().pop().unwrap_or_else(|| Vec::with_capacity(SERVE_CHUNK))
    };
    while buf.len() < len {
        let filled = buf.len();
        match pread(file, &mut buf, at + filled as u64, len, wait) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the blob file ends at {} (shorter than recorded)", at + filled as u64),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Part of the chunk is cached: send that, the rest is the next read's.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(if pooled { Bytes::from_owner(Pooled(buf)) } else { Bytes::from(buf) })
}

/// One `pread` at `at` into `buf`'s spare capacity, up to `len` bytes in all; `buf` grows
/// by what was read.
#[cfg(target_os = "linux")]
fn pread(file: &File, buf: &mut Vec<u8>, at: u64, len: usize, wait: Wait) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let want = len - buf.len();
    let spare = &mut buf.spare_capacity_mut()[..want];
    let iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
    let flags = if wait == Wait::No { libc::RWF_NOWAIT } else { 0 };
    // SAFETY: the kernel writes at most `iov_len` bytes into `spare`, which `buf` owns.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at as libc::off_t, flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A file system without `RWF_NOWAIT`: the read must go to a blocking thread.
        return Err(if e.raw_os_error() == Some(libc::EOPNOTSUPP) { io::ErrorKind::WouldBlock.into() } else { e });
    }
    // SAFETY: the kernel initialised the `n` bytes it reports, right after `buf.len()`.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

#[cfg(not(target_os = "linux"))]
fn pread(file: &File, buf: &mut Vec<u8>, at: u64, len: usize, wait: Wait) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    if wait == Wait::No {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let filled = buf.len();
    buf.resize(len, 0);
    let n = file.read_at(&mut buf[filled..], at);
    buf.truncate(filled + *n.as_ref().unwrap_or(&0));
    n
}

/// A blob range being served: the next offset, and the read waiting for the disk on a
/// blocking thread, if any.
struct Serving {
    file: Arc<File>,
    next: u64,
    end: u64,
    cold: Option<JoinHandle<io::Result<Bytes>>>,
}

impl Stream for Serving {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = &mut *self;
        if this.cold.is_none() {
            if this.next >= this.end {
                return Poll::Ready(None);
            }
            let len = (this.end - this.next).min(SERVE_CHUNK as u64) as usize;
            match read(&this.file, this.next, len, Wait::No) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let (file, at) = (Arc::clone(&this.file), this.next);
                    this.cold = Some(tokio::task::spawn_blocking(move || read(&file, at, len, Wait::Yes)));
                }
                read => return Poll::Ready(Some(this.sent(read))),
            }
        }
        let task = this.cold.as_mut().expect("a cold read is in flight");
        let read = ready!(Pin::new(task).poll(cx)).unwrap_or_else(|e| Err(io::Error::other(e)));
        this.cold = None;
        Poll::Ready(Some(this.sent(read)))
    }
}

impl Serving {
    /// Moves past a chunk read, or ends the stream after a failed one.
    fn sent(&mut self, read: io::Result<Bytes>) -> io::Result<Bytes> {
        match &read {
            Ok(chunk) => self.next += chunk.len() as u64,
            Err(_) => self.next = self.end,
        }
        read
    }
}

/// Tells the kernel that `file` will be read front to back (a larger readahead window).
fn sequential(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on an open file descriptor. Only a hint: a failure
        // changes nothing but speed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Opens a blob range for serving, on a blocking thread: the file must hold the whole
/// range now (else `InvalidData`, before anything is sent); the first chunk is read here.
/// If the file fails or shrinks later, the stream ends with the error.
pub(super) fn serve(path: &Path, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size {
        return Err(StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("range {range:?} of a blob file of {size} bytes"),
        )));
    }
    let len = (range.end - range.start).min(SERVE_CHUNK as u64) as usize;
    let first = read(&file, range.start, len, Wait::Yes)?;
    if range.end - range.start == len as u64 {
        return Ok(Box::pin(stream::once(async move { Ok(first) })));
    }
    sequential(&file);
    let rest = Serving { file: Arc::new(file), next: range.start + len as u64, end: range.end, cold: None };
    Ok(Box::pin(stream::once(async move { Ok(first) }).chain(rest)))
}
