//! Little-endian cursor reader and writer shared by every codec in this crate.
//!
//! The reader never allocates by a length it read: callers check lengths against their maxima
//! before asking for bytes, and `bytes` only borrows from the input.

use crate::{DecodeError, MAGIC_LEN};

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

/// The frame every fixed-layout object shares: an optional magic at the start, the fields, a gap
/// of reserved zero bytes, and a CRC-32 of everything before it in the last 4 bytes.
#[derive(Debug, Clone, Copy)]
pub struct FixedLayout {
    pub what: &'static str,
    pub magic: Option<[u8; MAGIC_LEN]>,
    /// Total length, CRC included.
    pub len: usize,
    /// Where the reserved gap starts (it ends at the CRC).
    pub reserved_offset: usize,
    /// Field name reported when the reserved gap is not zero.
    pub reserved_field: &'static str,
    /// The input must be exactly `len` bytes (else only its first `len` bytes are the object).
    pub exact: bool,
}

impl FixedLayout {
    pub const fn crc_offset(&self) -> usize {
        self.len - 4
    }

    /// Checks length, magic, CRC and the reserved gap, in that order; returns the field bytes
    /// (after the magic, before the reserved gap).
    pub fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], DecodeError> {
        if bytes.len() < self.len || (self.exact && bytes.len() != self.len) {
            return Err(DecodeError::Truncated {
                what: self.what,
                needed: self.len as u64,
                available: bytes.len() as u64,
            });
        }
        let bytes = &bytes[..self.len];
        let fields_start = match self.magic {
            Some(magic) if bytes[..MAGIC_LEN] != magic => {
                return Err(DecodeError::BadMagic { what: self.what });
            }
            Some(_) => MAGIC_LEN,
            None => 0,
        };
        check_crc(bytes, self.crc_offset(), self.what)?;
        check_reserved(
            &bytes[self.reserved_offset..self.crc_offset()],
            self.reserved_field,
        )?;
        Ok(&bytes[fields_start..self.reserved_offset])
    }

    /// Completes an encoding whose fields (and magic) fill `w` up to the reserved gap: writes the
    /// zero gap and the CRC.
    pub fn seal(&self, w: &mut Writer) {
        assert_eq!(
            w.len(),
            self.reserved_offset,
            "{}: fields end at the reserved gap",
            self.what
        );
        w.zeros(self.crc_offset() - self.reserved_offset);
        let crc = crate::crc32(&w.buf);
        w.u32(crc);
        assert_eq!(w.len(), self.len);
    }
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
