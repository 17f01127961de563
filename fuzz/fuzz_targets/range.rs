//! Fuzz target: `range::parse_range`, a blob GET's `Range` header against the blob's size.
//!
//! Input: 8 bytes of size (big-endian; fewer are zero-padded), the rest the header.
//! Checks: a range served is non-empty and lies within the blob (so `end - start` and the
//! `Content-Range` the server writes, `start-(end-1)/size`, cannot overflow); a plain
//! `bytes=a-b` inside the blob is served as exactly `a..b+1`; refusals are 416's code.
#![no_main]

use berth_core::ErrorKind;
use berth_fuzz::range::parse_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, value) = data.split_at(data.len().min(8));
    let mut be = [0u8; 8];
    be[..size.len()].copy_from_slice(size);
    let size = u64::from_be_bytes(be);
    let Ok(value) = std::str::from_utf8(value) else { return };

    match parse_range(value, size) {
        Ok(Some(range)) => {
            assert!(range.start < range.end && range.end <= size, "{value:?} of {size}: {range:?}");
        }
        Ok(None) => {}
        Err(e) => assert_eq!(e.kind, ErrorKind::BlobRangeInvalid),
    }

    // The plain form, when canonical, has one right answer.
    let plain = value.strip_prefix("bytes=").and_then(|r| r.split_once('-'));
    if let Some((Ok(a), Ok(b))) = plain.map(|(a, b)| (a.parse::<u64>(), b.parse::<u64>()))
        && value == format!("bytes={a}-{b}")
        && a <= b
        && b < size
    {
        assert_eq!(parse_range(value, size).ok(), Some(Some(a..b + 1)), "{value:?} of {size}");
    }
});
