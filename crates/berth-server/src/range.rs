//! Byte ranges a client sends: `Range` on blob reads and `Content-Range` on upload
//! chunks. Pure parsing, no I/O; every number is checked, so no client value can
//! overflow the arithmetic done on it (the fuzz targets in `fuzz/` run these).

use std::ops::Range;

use berth_core::{Error, ErrorKind};

/// A single satisfiable range of a `size`-byte blob, `None` to send the whole blob (no
/// range, or several: the server may ignore a multi-range request), or 416.
pub fn parse_range(value: &str, size: u64) -> Result<Option<Range<u64>>, Error> {
    let unsatisfiable = || Error::new(ErrorKind::BlobRangeInvalid).with_detail(format!("{value} of {size} bytes"));
    let parsed = http_range_header::parse_range_header(value).map_err(|_| unsatisfiable())?;
    let ranges = parsed.validate(size).map_err(|_| unsatisfiable())?;
    match ranges.as_slice() {
        // `end` is at most `size - 1`, so `end + 1` cannot overflow.
        [one] => Ok(Some(*one.start()..*one.end() + 1)),
        _ => Ok(None),
    }
}

/// An upload chunk's `Content-Range: <start>-<end>` (inclusive; a `bytes ` prefix and a
/// `/<total>` suffix are tolerated) as `(start, length)`.
pub fn parse_content_range(value: &str) -> Result<(u64, u64), Error> {
    let invalid = || Error::new(ErrorKind::UploadRangeInvalid).with_detail(value.to_owned());
    let v = value.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v);
    let (start, end) = v.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.parse().map_err(|_| invalid())?;
    let end: u64 = end.parse().map_err(|_| invalid())?;
    // `0-18446744073709551615` is 2^64 bytes: no length holds it.
    let len = end.checked_sub(start).and_then(|d| d.checked_add(1)).ok_or_else(invalid)?;
    Ok((start, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("0-99").unwrap(), (0, 100));
        assert_eq!(parse_content_range("bytes 10-19/100").unwrap(), (10, 10));
        assert!(parse_content_range("9-3").is_err());
        assert!(parse_content_range("x-3").is_err());
    }

    #[test]
    fn content_range_of_two_to_the_64_bytes_is_refused_not_overflowed() {
        let e = parse_content_range("0-18446744073709551615").unwrap_err();
        assert_eq!(e.kind, ErrorKind::UploadRangeInvalid);
        assert_eq!(parse_content_range("1-18446744073709551615").unwrap(), (1, u64::MAX));
        assert!(parse_content_range("0-18446744073709551616").is_err());
    }

    #[test]
    fn ranges_beyond_the_blob_are_unsatisfiable() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=100-200", 100).unwrap_err().kind, ErrorKind::BlobRangeInvalid);
        assert_eq!(parse_range("chunks=1-2", 100).unwrap_err().kind, ErrorKind::BlobRangeInvalid);
        assert_eq!(parse_range("bytes=0-18446744073709551615", u64::MAX).unwrap(), Some(0..u64::MAX));
    }
}
