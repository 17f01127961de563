//! Fuzz target: `range::parse_content_range`, an upload chunk's `Content-Range`.
//!
//! Checks: a parsed `(start, length)` has a length of at least one byte and a last byte
//! `start + length - 1` that fits in a u64 (no client value overflows the arithmetic);
//! it re-parses from its canonical `start-end` form to the same pair; a canonical
//! `a-b` parses exactly when `a <= b` and its length fits; refusals carry the upload's
//! range error code.
#![no_main]

use berth_core::ErrorKind;
use berth_fuzz::range::parse_content_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    match parse_content_range(value) {
        Ok((start, len)) => {
            assert!(len >= 1, "{value:?}: empty chunk");
            let end = start.checked_add(len - 1).unwrap_or_else(|| panic!("{value:?}: last byte overflows"));
            assert_eq!(parse_content_range(&format!("{start}-{end}")).ok(), Some((start, len)), "{value:?}");
        }
        Err(e) => assert_eq!(e.kind, ErrorKind::UploadRangeInvalid),
    }

    if let Some((Ok(a), Ok(b))) = value.split_once('-').map(|(a, b)| (a.parse::<u64>(), b.parse::<u64>()))
        && value == format!("{a}-{b}")
    {
        let fits = a <= b && (b - a).checked_add(1).is_some();
        assert_eq!(parse_content_range(value).is_ok(), fits, "{value:?}");
    }
});
