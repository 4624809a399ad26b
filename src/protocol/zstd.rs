//! zstd request bodies (rspamd's `Compression: zstd`, what `rspamc -z`
//! sends): decoded frame by frame as a stream and stopped one byte past the
//! limit, so a small body that would inflate to gigabytes (a decompression
//! bomb) costs at most the limit in memory and the time to produce it.

use std::io::Read;

/// The four bytes every zstd frame starts with.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why a zstd body could not become a message.
#[derive(Debug, PartialEq, Eq)]
pub enum UnzstdError {
    /// It decodes to more than the limit (in bytes).
    TooLarge(usize),
    /// It is not valid zstd (the decoder's reason, one line).
    Corrupt(String),
}

impl std::fmt::Display for UnzstdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnzstdError::TooLarge(max) => write!(f, "the zstd body decompresses to more than the limit of {max} bytes"),
            UnzstdError::Corrupt(why) => write!(f, "cannot decompress the zstd body: {}", why.replace('\n', " ")),
        }
    }
}

/// Decodes the zstd frames of `body` (one or more, concatenated) into at
/// most `max` bytes.
pub fn unzstd(body: &[u8], max: usize) -> Result<Vec<u8>, UnzstdError> {
    let mut out = Vec::new();
    let mut rest = body;
    if rest.is_empty() {
        return Err(UnzstdError::Corrupt("empty body".into()));
    }
    while !rest.is_empty() {
        let room = (max - out.len()) as u64 + 1;
        let decoder = ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(|e| UnzstdError::Corrupt(e.to_string()))?;
        decoder.take(room).read_to_end(&mut out).map_err(|e| UnzstdError::Corrupt(e.to_string()))?;
        if out.len() > max {
            return Err(UnzstdError::TooLarge(max));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn round_trip_and_concatenated_frames() {
        let m = b"Subject: hi\n\nhello world\n".repeat(50);
        let z = zstd(&m);
        assert_eq!(z[..4], MAGIC);
        assert_eq!(unzstd(&z, m.len()).unwrap(), m);
        let mut two = z.clone();
        two.extend_from_slice(&zstd(b"more"));
        let mut want = m.clone();
        want.extend_from_slice(b"more");
        assert_eq!(unzstd(&two, want.len()).unwrap(), want);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to a few KiB.
        let z = zstd(&vec![0u8; 64 << 20]);
        assert!(z.len() < 64 << 10, "{}", z.len());
        assert_eq!(unzstd(&z, 1 << 20), Err(UnzstdError::TooLarge(1 << 20)));
        assert!(unzstd(&z, 64 << 20).is_ok_and(|v| v.len() == 64 << 20));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(unzstd(b"Subject: plain\n\ntext", 1000), Err(UnzstdError::Corrupt(_))));
        let z = zstd(b"Subject: hi\n\nhello world, hello world, hello world\n");
        assert!(matches!(unzstd(&z[..z.len() - 3], 1000), Err(UnzstdError::Corrupt(_))));
        assert!(matches!(unzstd(b"", 1000), Err(UnzstdError::Corrupt(_))));
    }
}
