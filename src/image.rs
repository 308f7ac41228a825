//! Image files on disk (FORMAT.md "Images"): writing one crash-safely — a temporary file written
//! block by block, `fdatasync`, rename, directory `fsync` — and reading one back whole with every
//! check of `storage_format::image::decode_image`. Blocks are compressed with zstd.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use storage_format::DecodeError;
use storage_format::image::{
    BLOCK_TARGET_DEFAULT, ImageEncoder, ImageEntry, ImageFooter, ImageHeader, decode_image,
};
use thiserror::Error;

use crate::fault::crash_point;
use crate::fs::{Fs, FsFile};

/// zstd level of image blocks: the fastest, since images are written online and restores read
/// them on the critical path (level 3 saved under 10% more on config-like values here).
const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {} is damaged: {source}", path.display())]
    Corrupt { path: PathBuf, source: DecodeError },
}

impl ImageError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
        move |source| ImageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One live key of a loaded image.
#[derive(Debug, Clone)]
pub struct ImageValue {
    pub key: Arc<str>,
    pub revision: u64,
    pub create_revision: u64,
    pub version: u64,
    pub timestamp_us: u64,
    pub value: Arc<[u8]>,
}

impl ImageValue {
    pub fn entry(&self) -> ImageEntry<'_> {
        ImageEntry {
            key: &self.key,
            revision: self.revision,
            create_revision: self.create_revision,
            version: self.version,
            timestamp_us: self.timestamp_us,
            value: &self.value,
        }
    }
}

/// A whole image in memory, keys ascending.
#[derive(Debug, Clone)]
pub struct Image {
    pub header: ImageHeader,
    pub footer: ImageFooter,
    pub entries: Vec<ImageValue>,
}

pub fn compress(raw: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(raw, ZSTD_LEVEL).expect("zstd compresses any input held in memory")
}

pub fn decompress(compressed: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    zstd::bulk::decompress(compressed, raw_len).map_err(|e| e.to_string())
}

/// Reads and checks a whole image file.
pub fn read_image(path: &Path) -> Result<Image, ImageError> {
    let bytes = std::fs::read(path).map_err(ImageError::io("read image", path))?;
    let mut entries = Vec::new();
    let (header, footer) = decode_image(&bytes, &decompress, &mut |e| {
        entries.push(ImageValue {
            key: Arc::from(e.key),
            revision: e.revision,
            create_revision: e.create_revision,
            version: e.version,
            timestamp_us: e.timestamp_us,
            value: Arc::from(e.value),
        })
    })
    .map_err(|source| ImageError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Image {
        header,
        footer,
        entries,
    })
}

/// Writes an image to `<path>.tmp` as entries arrive; `finish` makes it durable under `path`.
/// Dropped unfinished, it leaves only the temporary file, which the next open removes.
pub struct ImageWriter {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    tmp: PathBuf,
    file: Box<dyn FsFile>,
    encoder: ImageEncoder,
    bytes: u64,
    raw_bytes: u64,
}

impl ImageWriter {
    pub fn create(
        fs: Arc<dyn Fs>,
        path: &Path,
        header: ImageHeader,
    ) -> Result<ImageWriter, ImageError> {
        let tmp = temp_path(path);
        if fs.exists(&tmp).map_err(ImageError::io("stat", &tmp))? {
            fs.remove_file(&tmp)
                .map_err(ImageError::io("remove stale", &tmp))?;
        }
        let mut file = fs
            .create_new(&tmp)
            .map_err(ImageError::io("create image", &tmp))?;
        let (encoder, head) = ImageEncoder::new(header, BLOCK_TARGET_DEFAULT, Box::new(compress));
        file.write_all(&head)
            .map_err(ImageError::io("write image", &tmp))?;
        Ok(ImageWriter {
            fs,
            path: path.to_path_buf(),
            tmp,
            file,
            encoder,
            bytes: head.len() as u64,
            raw_bytes: 0,
        })
    }

    pub fn push(&mut self, entry: &ImageEntry<'_>) -> Result<(), ImageError> {
        self.raw_bytes +=
            (storage_format::image::ENTRY_FIXED_LEN + entry.key.len() + entry.value.len()) as u64;
        if let Some(block) = self.encoder.push(entry) {
            self.file
                .write_all(&block)
                .map_err(ImageError::io("write image", &self.tmp))?;
            self.bytes += block.len() as u64;
        }
        Ok(())
    }

    /// Entry bytes taken so far, before compression (what pacing counts: the work done).
    pub fn raw_bytes(&self) -> u64 {
        self.raw_bytes
    }

    /// Writes the last block and the footer, syncs, renames into place and syncs the directory.
    /// Returns the footer and the file's length.
    pub fn finish(self) -> Result<(ImageFooter, u64), ImageError> {
        let (tail, footer) = self.encoder.finish();
        let mut file = self.file;
        file.write_all(&tail)
            .map_err(ImageError::io("write image", &self.tmp))?;
        let bytes = self.bytes + tail.len() as u64;
        crash_point("image:before-sync");
        file.sync_data()
            .map_err(ImageError::io("sync image", &self.tmp))?;
        crash_point("image:before-rename");
        self.fs
            .rename(&self.tmp, &self.path)
            .map_err(ImageError::io("rename image", &self.path))?;
        let dir = self.path.parent().expect("an image lives in a directory");
        self.fs
            .sync_dir(dir)
            .map_err(ImageError::io("sync directory", dir))?;
        Ok((footer, bytes))
    }
}

/// `path` + `.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(storage_format::segment::TEMP_SUFFIX);
    PathBuf::from(tmp)
}
