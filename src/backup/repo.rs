//! A backup repository: a directory or an S3-compatible bucket prefix, both through
//! `object_store` (one code path), with the repository lock (FORMAT.md "Backup repositories").

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::BackupError;

/// How long a repository lock is held before another process may break it.
pub const LOCK_LEASE_US: u64 = 3600 * 1_000_000;

/// An opened repository.
#[derive(Clone)]
pub struct Repo {
    pub url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// For a directory repository, its path: uploads are fsynced (object_store's local store
    /// renames into place without syncing; an S3 PUT is durable when it returns).
    local: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repo({})", self.url)
    }
}

impl Repo {
    /// Opens `url`: `s3://bucket/prefix` (endpoint, region and credentials from the usual
    /// `AWS_*` variables; `AWS_ENDPOINT_URL` for an S3-compatible server) or a directory path
    /// (created if missing).
    pub fn open(url: &str) -> Result<Repo, BackupError> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok();
        Repo::open_with_endpoint(url, endpoint.as_deref())
    }

    /// Opens `url` for the offline commands (list, verify, prune, restore, drill), which must
    /// not make a repository where there is none: a directory must exist, and either kind must
    /// hold backups or an archive. Else a clear error, and nothing is created or written.
    pub async fn open_existing(url: &str) -> Result<Repo, BackupError> {
        let not_one = |why: &str| {
            BackupError::Invalid(format!(
                "{url} is not a backup repository ({why}); give the directory or s3://bucket/prefix \
                 URL of one (the names in the server's [[backup.repositories]] only work with \
                 `backup create`)"
            ))
        };
        if !url.starts_with("s3://") {
            match std::fs::metadata(url) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(not_one("not a directory")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(not_one("no such directory"));
                }
                Err(e) => return Err(not_one(&e.to_string())),
            }
        }
        let repo = Repo::open(url)?;
        for dir in [super::BACKUPS_DIR, super::archive::ARCHIVE_DIR] {
            if !repo.list(dir).await?.is_empty() {
                return Ok(repo);
            }
        }
        Err(not_one("it holds no backups/ and no archive/"))
    }

    /// `open`, with the S3 endpoint given rather than read from the environment.
    pub fn open_with_endpoint(url: &str, endpoint: Option<&str>) -> Result<Repo, BackupError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BackupError::Invalid(format!("{url}: no bucket")));
            }
            let mut builder =
                object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = endpoint {
                builder = builder
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                builder = builder.with_region("us-east-1");
            }
            let store = builder
                .build()
                .map_err(|e| BackupError::Invalid(format!("{url}: {e}")))?;
            return Ok(Repo {
                url: url.to_owned(),
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                local: None,
            });
        }
        if url.is_empty() || url.contains("://") {
            return Err(BackupError::Invalid(format!(
                "{url:?}: a repository is a directory path or s3://bucket/prefix"
            )));
        }
        std::fs::create_dir_all(url)
            .map_err(|e| BackupError::Invalid(format!("{url}: cannot create: {e}")))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(url)
            .map_err(|e| BackupError::Invalid(format!("{url}: {e}")))?;
        Ok(Repo {
            url: url.to_owned(),
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            local: Some(std::path::PathBuf::from(url)),
        })
    }

    /// The object path of `name` (a `/`-separated path inside the repository).
    pub fn path(&self, name: &str) -> ObjectPath {
        let mut parts: Vec<String> = self.prefix.parts().map(|p| p.as_ref().to_owned()).collect();
        parts.extend(name.split('/').map(str::to_owned));
        ObjectPath::from_iter(parts)
    }

    /// `name` relative to the repository, from an object path.
    fn relative(&self, path: &ObjectPath) -> String {
        let skip = self.prefix.parts().count();
        path.parts()
            .skip(skip)
            .map(|p| p.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join("/")
    }

    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        self.put_unsynced(name, bytes::Bytes::from(bytes)).await?;
        self.sync(name).await
    }

    /// Uploads the file at `source` as `name`, unsynced (see `put_unsynced`). A directory
    /// repository copies it in the kernel (`std::fs::copy`: copy_file_range, as `cp` does) to a
    /// temporary name and renames it into place; S3 PUTs `content` (the same file, mapped).
    pub async fn put_file(
        &self,
        name: &str,
        source: &std::path::Path,
        content: bytes::Bytes,
    ) -> Result<(), BackupError> {
        let Some(root) = self.local.clone() else {
            return self.put_unsynced(name, content).await;
        };
        let (source, target) = (source.to_path_buf(), root.join(name));
        self.blocking_io("upload", name, move || {
            let parent = target.parent().expect("objects live in a directory");
            std::fs::create_dir_all(parent)?;
            // Not a dot-file: a crash mid-copy leaves it listed, so prune removes it with the
            // incomplete backup it belongs to.
            let temp = parent.join(format!(
                "{}.{}.tmp",
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("object"),
                random_hex::<4>()
            ));
            let copied =
                std::fs::copy(&source, &temp).and_then(|_| std::fs::rename(&temp, &target));
            if copied.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            copied.map(|_| ())
        })
        .await
    }

    /// `put` of shared bytes (no copy) without the fsync of a directory repository's file: the caller makes it
    /// durable with `sync` before anything relies on it (a backup syncs all its files, in
    /// parallel, before writing the manifest that lists them).
    pub async fn put_unsynced(&self, name: &str, bytes: bytes::Bytes) -> Result<(), BackupError> {
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map_err(|e| self.error("upload", name, e))?;
        Ok(())
    }

    /// Makes an object's content durable in a directory repository (fsync of the file; its name
    /// is made durable by `sync_dirs` before the manifest that lists it is written). A no-op on S3,
    /// where a PUT is durable when it returns.
    pub async fn sync(&self, name: &str) -> Result<(), BackupError> {
        let Some(root) = self.local.clone() else {
            return Ok(());
        };
        let path = root.join(name);
        self.blocking_io("sync", name, move || std::fs::File::open(&path)?.sync_all())
            .await
    }

    /// Makes the names under `dir` durable in a directory repository: fsync of `dir`, every
    /// directory below it, and every directory above it up to the repository.
    pub async fn sync_dirs(&self, dir: &str) -> Result<(), BackupError> {
        let Some(root) = self.local.clone() else {
            return Ok(());
        };
        let top = root.join(dir);
        self.blocking_io("sync", dir, move || {
            // Nothing there yet (a backup that uploaded no file): nothing to make durable; the
            // put that creates it is followed by another sync.
            if !top.try_exists()? {
                return Ok(());
            }
            let mut stack = vec![top.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)? {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        stack.push(e.path());
                    }
                }
                std::fs::File::open(&d)?.sync_all()?;
            }
            let mut up = top.parent();
            while let Some(d) = up {
                std::fs::File::open(d)?.sync_all()?;
                if d == root {
                    break;
                }
                up = d.parent();
            }
            Ok(())
        })
        .await
    }

    /// File work of a directory repository on a blocking thread, its error named by `op` and
    /// the object.
    async fn blocking_io(
        &self,
        op: &'static str,
        name: &str,
        work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), BackupError> {
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| BackupError::Store(e.to_string()))?;
        result.map_err(|e| BackupError::Repo {
            op,
            object: format!("{}/{name}", self.url.trim_end_matches('/')),
            reason: e.to_string(),
        })
    }

    /// Creates `name` only if it does not exist; `false` if it did.
    pub async fn put_new(&self, name: &str, bytes: Vec<u8>) -> Result<bool, BackupError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(name), PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error("create", name, e)),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>, BackupError> {
        self.download(name)
            .await
            .map_err(|e| self.error("download", name, e))
    }

    /// `get`, with `None` for an object that does not exist (one request, no listing).
    pub async fn get_if_exists(&self, name: &str) -> Result<Option<Vec<u8>>, BackupError> {
        match self.download(name).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("download", name, e)),
        }
    }

    /// A whole object (a manifest or a record), refused unread beyond `RECORD_BYTES_MAX`.
    async fn download(&self, name: &str) -> Result<Vec<u8>, object_store::Error> {
        let result = self.store.get(&self.path(name)).await?;
        let max = super::layout::RECORD_BYTES_MAX;
        if result.meta.size > max {
            return Err(object_store::Error::Generic {
                store: "repository",
                source: format!(
                    "{name} is {} bytes, over the maximum {max}",
                    result.meta.size
                )
                .into(),
            });
        }
        Ok(result.bytes().await?.to_vec())
    }

    /// Streams object `name` through `sink` chunk by chunk (memory stays at one chunk); returns
    /// its size. A download failure is a repository error; a sink failure a store error.
    pub async fn stream(
        &self,
        name: &str,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, BackupError> {
        use futures_util::StreamExt;
        let result = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.error("download", name, e))?;
        let mut stream = result.into_stream();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("download", name, e))?;
            sink(&chunk).map_err(|e| BackupError::Store(format!("writing {name}: {e}")))?;
            size += chunk.len() as u64;
        }
        Ok(size)
    }

    /// Whether object `name` holds exactly `expected` (the read-back check of an upload). A
    /// directory repository's file is mapped and compared in place; S3 downloads it.
    pub async fn holds(&self, name: &str, expected: &bytes::Bytes) -> Result<bool, BackupError> {
        let Some(root) = self.local.clone() else {
            // Streamed and compared chunk by chunk: memory stays at one chunk whatever the size.
            let (mut at, mut same) = (0usize, true);
            self.stream(name, |chunk| {
                let end = at + chunk.len();
                same = same && end <= expected.len() && expected[at..end] == *chunk;
                at = end;
                Ok(())
            })
            .await?;
            return Ok(same && at == expected.len());
        };
        let path = root.join(name);
        let expected = expected.clone();
        let same = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let file = std::fs::File::open(&path)?;
            if file.metadata()?.len() != expected.len() as u64 {
                return Ok(false);
            }
            if expected.is_empty() {
                return Ok(true);
            }
            // SAFETY: the file was just written under the repository lock and nothing
            // truncates it while the map lives (dropped at the end of this closure).
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Ok(map[..] == expected[..])
        })
        .await
        .map_err(|e| BackupError::Store(e.to_string()))?
        .map_err(|e| BackupError::Repo {
            op: "read back",
            object: format!("{}/{name}", self.url.trim_end_matches('/')),
            reason: e.to_string(),
        })?;
        Ok(same)
    }

    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", name, e)),
        }
    }

    /// Every object name under `dir` (recursively), relative to the repository.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, BackupError> {
        use futures_util::StreamExt;
        let prefix = self.path(dir);
        let mut stream = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| self.error("list", dir, e))?;
            out.push(self.relative(&meta.location));
        }
        out.sort();
        Ok(out)
    }

    fn error(&self, op: &'static str, name: &str, e: object_store::Error) -> BackupError {
        BackupError::Repo {
            op,
            object: format!("{}/{name}", self.url.trim_end_matches('/')),
            reason: e.to_string(),
        }
    }

    /// Takes the repository lock (a create-only `lock` object with a lease), breaking a lock
    /// whose lease expired. Released by `RepoLock::release`; a crashed holder's lock expires.
    pub async fn lock(&self, purpose: &str) -> Result<RepoLock, BackupError> {
        let now = now_us();
        let record = LockRecord {
            owner: format!(
                "{}:{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
                std::process::id()
            ),
            purpose: purpose.to_owned(),
            acquired_us: now,
            expires_us: now + LOCK_LEASE_US,
            token: random_hex::<8>(),
        };
        let bytes = serde_json::to_vec(&record).expect("a lock record serializes");
        for _ in 0..2 {
            if self.put_new(LOCK_OBJECT, bytes.clone()).await? {
                let token = record.token.clone();
                let renewal = tokio::spawn(renew(self.clone(), record));
                return Ok(RepoLock {
                    repo: self.clone(),
                    token,
                    renewal,
                });
            }
            let held: Option<LockRecord> = match self.get(LOCK_OBJECT).await {
                Ok(b) => serde_json::from_slice(&b).ok(),
                Err(_) => None,
            };
            match held {
                Some(h) if h.expires_us > now_us() && !holder_is_dead(&h.owner) => {
                    return Err(BackupError::Locked(format!(
                        "{:?} holds it for {:?} since {} (lease until {})",
                        h.owner,
                        h.purpose,
                        crate::clock::format_timestamp_us(h.acquired_us),
                        crate::clock::format_timestamp_us(h.expires_us)
                    )));
                }
                _ => {
                    tracing::warn!(repo = %self.url, "breaking an expired or unreadable repository lock");
                    self.delete(LOCK_OBJECT).await?;
                }
            }
        }
        Err(BackupError::Locked(
            "another process took the lock at the same moment".into(),
        ))
    }
}

/// Whether the lock's owner (`host:pid`) is a process of this host that no longer runs: its lock
/// can be broken at once instead of waiting for the lease (a killed backup on this machine).
fn holder_is_dead(owner: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let here = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    host == here
        && pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// The lock object's name.
pub const LOCK_OBJECT: &str = "lock";

#[derive(Debug, Serialize, Deserialize)]
struct LockRecord {
    owner: String,
    purpose: String,
    acquired_us: u64,
    expires_us: u64,
    token: String,
}

/// A held repository lock.
pub struct RepoLock {
    repo: Repo,
    token: String,
    /// Extends the lease while the lock is held (a backup may outlast one lease).
    renewal: tokio::task::JoinHandle<()>,
}

/// Every quarter lease, moves the lock's expiry a lease ahead, as long as it is still ours.
async fn renew(repo: Repo, mut record: LockRecord) {
    loop {
        tokio::time::sleep(std::time::Duration::from_micros(LOCK_LEASE_US / 4)).await;
        let ours = match repo.get(LOCK_OBJECT).await {
            Ok(bytes) => {
                serde_json::from_slice::<LockRecord>(&bytes).is_ok_and(|r| r.token == record.token)
            }
            Err(_) => false,
        };
        if !ours {
            tracing::warn!(repo = %repo.url, "the repository lock was taken over; no longer renewing it");
            return;
        }
        record.expires_us = now_us() + LOCK_LEASE_US;
        let bytes = serde_json::to_vec(&record).expect("a lock record serializes");
        if let Err(error) = repo.put(LOCK_OBJECT, bytes).await {
            tracing::warn!(repo = %repo.url, %error, "renewing the repository lock failed");
        }
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl RepoLock {
    /// Deletes the lock object if it is still ours.
    pub async fn release(self) -> Result<(), BackupError> {
        self.renewal.abort();
        let ours = match self.repo.get(LOCK_OBJECT).await {
            Ok(bytes) => serde_json::from_slice::<LockRecord>(&bytes)
                .map(|r| r.token == self.token)
                .unwrap_or(false),
            Err(_) => false,
        };
        if ours {
            self.repo.delete(LOCK_OBJECT).await?;
        }
        Ok(())
    }
}

pub use crate::clock::now_us;

/// `N` random bytes as hex (ids, lock tokens, scratch names).
pub fn random_hex<const N: usize>() -> String {
    storage_format::hex(&crate::clock::random_bytes::<N>())
}
