//! The record codecs of message format v2: a batch's header stays plain and the records after
//! it are compressed as one stream, in the framing Kafka's clients read: gzip (RFC 1952),
//! snappy (a raw block, which librdkafka writes and Kafka's Java client also reads), lz4 (the
//! LZ4 frame format) and zstd (a zstd frame). Pure-Rust codecs, so the build needs no C
//! toolchain for them.

use std::io::{Read, Write};

use super::{BatchError, Compression};

/// The most bytes a batch's records may decompress to. A compressed batch is at most
/// `message.max.bytes`; this bounds what a hostile one can make a reader allocate.
pub const MAX_DECOMPRESSED_SIZE: usize = 256 * 1024 * 1024;

impl Compression {
    /// Kafka's name for the codec (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec Kafka calls `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    /// Compresses a batch's records section.
    pub fn compress(self, records: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => records.to_vec(),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(records).expect("writes to a Vec succeed");
                encoder.finish().expect("writes to a Vec succeed")
            }
            Compression::Snappy => snap::raw::Encoder::new()
                .compress_vec(records)
                .expect("snappy compresses any input up to 4 GiB"),
            Compression::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(records).expect("writes to a Vec succeed");
                encoder.finish().expect("writes to a Vec succeed")
            }
            Compression::Zstd => ruzstd::encoding::compress_to_vec(
                records,
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
        }
    }

    /// Decompresses a batch's records section, refusing to grow past
    /// [`MAX_DECOMPRESSED_SIZE`].
    pub fn decompress(self, compressed: &[u8]) -> Result<Vec<u8>, BatchError> {
        let corrupt = |_| BatchError::MalformedRecord("compressed records do not decompress");
        let limit = MAX_DECOMPRESSED_SIZE as u64 + 1;
        let mut out = Vec::new();
        match self {
            Compression::None => out.extend_from_slice(compressed),
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(compressed)
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(corrupt)?;
            }
            Compression::Snappy => match compressed.strip_prefix(XERIAL_MAGIC) {
                // Kafka's Java client frames snappy the xerial way: a 16-byte header, then
                // blocks each preceded by its big-endian length.
                Some(rest) => {
                    let mut blocks = rest.get(8..).ok_or(BatchError::MalformedRecord(
                        "truncated xerial snappy header",
                    ))?;
                    while !blocks.is_empty() {
                        let (length, rest) = blocks
                            .split_at_checked(4)
                            .ok_or(BatchError::MalformedRecord("truncated xerial snappy block"))?;
                        let length =
                            u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
                        let (block, rest) = rest
                            .split_at_checked(length)
                            .ok_or(BatchError::MalformedRecord("truncated xerial snappy block"))?;
                        snappy_block(block, &mut out)?;
                        blocks = rest;
                    }
                }
                None => snappy_block(compressed, &mut out)?,
            },
            Compression::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(compressed)
                    .take(limit)
                    .read_to_end(&mut out)
                    .map_err(corrupt)?;
            }
            Compression::Zstd => {
                let mut source = compressed;
                let decoder =
                    ruzstd::decoding::StreamingDecoder::new(&mut source).map_err(|_| {
                        BatchError::MalformedRecord("compressed records do not decompress")
                    })?;
                decoder.take(limit).read_to_end(&mut out).map_err(corrupt)?;
            }
        }
        if out.len() > MAX_DECOMPRESSED_SIZE {
            return Err(BatchError::MalformedRecord(
                "compressed records decompress past the size limit",
            ));
        }
        Ok(out)
    }
}

/// The first 8 bytes of a xerial-framed snappy stream.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Appends one raw snappy block's contents to `out`, within [`MAX_DECOMPRESSED_SIZE`].
fn snappy_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), BatchError> {
    let corrupt = BatchError::MalformedRecord("compressed records do not decompress");
    let length = snap::raw::decompress_len(block).map_err(|_| corrupt.clone())?;
    if out.len() + length > MAX_DECOMPRESSED_SIZE {
        return Err(BatchError::MalformedRecord(
            "compressed records decompress past the size limit",
        ));
    }
    let start = out.len();
    out.resize(start + length, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|_| corrupt)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_and_is_named_as_kafka_names_it() {
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let compressed = c.compress(&data);
            if c != Compression::None {
                assert!(compressed.len() < data.len(), "{c:?} compresses");
            }
            assert_eq!(c.decompress(&compressed).unwrap(), data, "{c:?}");
            assert_eq!(Compression::from_name(c.name()), Some(c));
        }
        assert_eq!(Compression::from_name("brotli"), None);
    }

    #[test]
    fn xerial_framed_snappy_as_the_java_client_writes_it_decodes() {
        let data = b"the java client frames snappy in blocks".repeat(20);
        let (first, second) = data.split_at(300);
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for part in [first, second] {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(Compression::Snappy.decompress(&framed).unwrap(), data);
        framed.pop();
        assert!(Compression::Snappy.decompress(&framed).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in ALL.into_iter().skip(1) {
            for garbage in [&b""[..], b"\x00\x01\x02", &[0xff; 100]] {
                let _ = c.decompress(garbage);
            }
        }
    }
}
