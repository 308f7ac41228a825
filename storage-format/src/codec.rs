//! Little-endian cursor reader and writer shared by every codec in this crate.
//!
//! The reader never allocates by a length it read: callers check lengths against their maxima
//! before asking for bytes, and `bytes` only borrows from the input.

use crate::DecodeError;

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads little-endian fields from a borrowed slice, failing with `Truncated` at its end.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
    position: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8], what: &'static str) -> Self {
        Reader {
            input,
            position: 0,
            what,
        }
    }
    pub fn position(&self) -> usize {
        self.position
    }
    pub fn remaining(&self) -> usize {
        self.input.len() - self.position
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what: self.what,
                needed: (self.position as u64) + n as u64,
                available: self.input.len() as u64,
            });
        }
        let out = &self.input[self.position..self.position + n];
        self.position += n;
        Ok(out)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                what: self.what,
                extra: extra as u64,
            }),
        }
    }
}

/// Fails unless every byte of a reserved field is zero (version 1 gives them no meaning, so a
/// non-zero byte is damage, and everything a decoder accepts re-encodes to the same bytes).
pub fn check_reserved(bytes: &[u8], field: &'static str) -> Result<(), DecodeError> {
    if bytes.iter().any(|&b| b != 0) {
        return Err(DecodeError::InvalidField {
            field,
            reason: "reserved bytes are not zero".to_owned(),
        });
    }
    Ok(())
}

/// Checks the little-endian CRC-32 stored at `crc_offset` against the CRC of the bytes before it.
pub fn check_crc(bytes: &[u8], crc_offset: usize, what: &'static str) -> Result<(), DecodeError> {
    let stored = u32_at(bytes, crc_offset);
    let actual = crate::crc32(&bytes[..crc_offset]);
    if stored != actual {
        return Err(DecodeError::ChecksumMismatch {
            what,
            expected: stored,
            actual,
        });
    }
    Ok(())
}

/// Reads a little-endian u32 at `offset` of a slice known to be long enough.
pub fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian u64 at `offset` of a slice known to be long enough.
pub fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}
