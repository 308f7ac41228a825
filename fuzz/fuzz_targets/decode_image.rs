//! The image decoder on arbitrary bytes: never panics. Two inputs per run: the bytes as a whole
//! file, and the bytes as the entries of one block, framed with valid CRCs, header and footer
//! (identity "compression"), so the entry decoder sees arbitrary input past the checksums. An
//! accepted framed image holds exactly the counts it claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use storage_format::image::{ImageFooter, ImageHeader, ImageKind, decode_image};
use storage_format::{FormatVersion, crc32};

fn identity(compressed: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    if compressed.len() != raw_len {
        return Err("length".into());
    }
    Ok(compressed.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_image(data, &identity, &mut |_| {});
    if data.len() < 4 {
        return;
    }
    let (count, raw) = data.split_at(4);
    let entry_count = u32::from_le_bytes(count.try_into().unwrap()) % 64;
    let header = ImageHeader {
        version: FormatVersion::CURRENT,
        history_id: [7; 16],
        revision: u64::MAX / 2,
        timestamp_us: u64::MAX / 2,
        hash: [1; 32],
        created_unix_us: 1,
        kind: ImageKind::Snapshot,
    };
    let mut file = header.encode().to_vec();
    let mut block = Vec::new();
    block.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    block.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    block.extend_from_slice(&entry_count.to_le_bytes());
    block.extend_from_slice(&crc32(raw).to_le_bytes());
    block.extend_from_slice(&crc32(raw).to_le_bytes());
    let crc = crc32(&block);
    block.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(&block);
    file.extend_from_slice(raw);
    let footer = ImageFooter {
        block_count: 1,
        key_count: entry_count as u64,
        body_len: file.len() as u64,
        sha256: Sha256::digest(&file).into(),
    };
    file.extend_from_slice(&footer.encode());
    let mut seen = 0u64;
    if let Ok((_, f)) = decode_image(&file, &identity, &mut |_| seen += 1) {
        assert_eq!(seen, f.key_count);
        assert_eq!(f.key_count, entry_count as u64);
    }
});
