//! The server's configuration: defaults, then the TOML file, then `LLMCM_*` environment variables,
//! then command-line flags. Every field is documented with its default and bounds here and in
//! `docs/configuration.md`; `Config::validate` enforces the bounds with an error naming the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::{
    COMMIT_BYTES_MAX, COMMIT_OPS_MAX, LogConfig, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};

/// Largest configuration file read.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// Tokens in the configuration, at most.
pub const TOKENS_MAX: usize = 10_000;
/// Prefixes of one token, at most.
pub const TOKEN_PREFIXES_MAX: usize = 100;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is {len} bytes, over the maximum {max}")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The data directory. Default: `./llmcm-data`.
    pub data_dir: PathBuf,
    /// Address to listen on. Default: `127.0.0.1:7070`. A non-loopback address needs tokens (or
    /// `insecure_no_auth`).
    pub listen: String,
    /// Log filter (`info`, `llmcm=debug`, ...). Default: `info`.
    pub log_level: String,
    /// Serve without tokens on a non-loopback address. Default: false.
    pub insecure_no_auth: bool,
    /// Serve tokens over plain HTTP on a non-loopback address (they travel in clear text).
    /// Default: false: such a server needs `[tls]`.
    pub insecure_plaintext: bool,
    pub storage: StorageConfig,
    pub snapshot: SnapshotConfig,
    pub retention: RetentionConfig,
    pub backup: BackupConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
}

/// Backup repositories (DESIGN.md §6): API callers and `llmcm backup create` pick one by name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// `/health` warns when the newest successful backup (of any kind, in any repository) is
    /// older than this. Default: `26h` (a daily schedule plus slack). Bounds: `1m` to `365d`.
    pub warn_age: ConfigDuration,
    /// How often the server re-reads each repository's latest `backup verify` result (for
    /// metrics, `/health` and `llmcm doctor`). Default: `1m`. Bounds: `1s` to `1d`.
    pub poll: ConfigDuration,
    pub repositories: Vec<RepositoryConfig>,
}

/// One backup repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// 1 to 64 characters of `[A-Za-z0-9._-]`, unique.
    pub name: String,
    /// A directory path or `s3://bucket/prefix` (endpoint and credentials from `AWS_*`).
    pub url: String,
    /// Ship every segment as it seals (continuous archiving). Default: false.
    #[serde(default)]
    pub archive: bool,
}

/// Repositories in the configuration, at most.
pub const REPOSITORIES_MAX: usize = 16;

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            warn_age: ConfigDuration::default_of("26h"),
            poll: ConfigDuration::default_of("1m"),
            repositories: Vec::new(),
        }
    }
}

/// Snapshots: the state at a revision, written as a checksummed image (FORMAT.md "Images").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// A snapshot is taken once this many commits followed the last one. Default: 100000.
    /// 0: never by count. Bounds: 0 to 1000000000.
    pub every_commits: u64,
    /// A snapshot is taken once the last one is this old and commits followed it. Default: `1h`.
    /// `0s`: never by time. Bounds: `0s` to `30d`.
    pub every: ConfigDuration,
    /// Snapshots kept, spread over the history (the newest and the oldest always; each new one
    /// beyond the count removes the one whose neighbours are closest). Default: 8. Bounds: 1 to 100.
    pub keep: usize,
    /// Snapshots and compaction base images are written at most this fast, in bytes per second,
    /// so they do not starve requests of disk bandwidth. Default: 268435456 (256 MiB/s). 0: unpaced.
    pub io_bytes_per_sec: u64,
}

/// Retention: history older than `keep` is compacted (DESIGN.md §2 "Retention").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// History kept: `forever` (the default: never compact automatically) or a duration,
    /// between `1h` and `36500d`.
    pub keep: Retention,
    /// How often the retention policy runs. Default: `1h`. Bounds: `1m` to `7d`.
    pub every: ConfigDuration,
}

/// Limits and rolling of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A segment rolls once it would grow past this. Default: 64 MiB. Bounds: 64 KiB to 4 GiB.
    pub segment_bytes_max: u64,
    /// A segment holding commits rolls once it is this old. Default: `1h`. Bounds: `1s` to `30d`.
    pub segment_age_max: ConfigDuration,
    /// The background scrub re-reads every sealed segment (record checksums, seal) once per
    /// this period, paced by `snapshot.io_bytes_per_sec`; damage is reported, never repaired.
    /// Default: `1d`. `0s`: never. Bounds: `0s` to `30d`.
    pub scrub_every: ConfigDuration,
    /// Largest value of one put. Default and maximum: 1 MiB. Minimum: 1 byte.
    pub value_bytes_max: usize,
    /// Most ops in one change commit. Default and maximum: 1000. Minimum: 1.
    pub commit_ops_max: usize,
    /// Largest encoded change commit. Default and maximum: 8 MiB. Minimum: 4 KiB.
    pub commit_bytes_max: usize,
    /// After a roll, read the sealed segment back into the page cache in 2 MiB pieces, so
    /// point reads of its values are faster. Default: true.
    pub reread_sealed_segments: bool,
}

/// The HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request that takes longer is answered 503. Default: `30s`. Bounds: `1s` to `10m`.
    pub request_timeout: ConfigDuration,
    /// Requests served at once; more wait. Default: 1024. Bounds: 1 to 65536.
    pub concurrent_requests_max: usize,
    /// On SIGTERM, in-flight requests get this long to finish. Default: `10s`. Bounds: `0s` to `5m`.
    pub shutdown_drain: ConfigDuration,
    /// Open connections served, at most; a few more (`api::connection::CONNECTIONS_RESERVED`)
    /// are kept for health probes and metrics, and beyond those a connection is closed at once.
    /// Lowered at start to fit the descriptor limit. Default: 8192. Bounds: 16 to 1048576.
    pub connections_max: usize,
    /// A connection with no request in progress is closed after this long. Default: `60s`.
    /// Bounds: `1s` to `1h`.
    pub idle_timeout: ConfigDuration,
    /// A request's headers (and a TLS handshake) must arrive within this long of its first
    /// byte (of the connection, for the first request). Default: `10s`. Bounds: `1s` to `5m`.
    pub header_read_timeout: ConfigDuration,
    /// A request's body must arrive within this long (else 408). Default: `30s`. Bounds: `1s`
    /// to `10m`.
    pub body_read_timeout: ConfigDuration,
    /// A connection whose writes make no progress for this long (a client that stopped
    /// reading) is closed. Default: `30s`. Bounds: `1s` to `10m`.
    pub send_timeout: ConfigDuration,
    /// Open watches, at most (beyond: 503). Default: 10000. Bounds: 1 to 1000000.
    pub watchers_max: usize,
    /// Encoded events one watcher may hold for a client that has not taken them; a client that
    /// leaves more than this waiting for `api::watch::WATCH_DRAIN_WAIT` is ended with `lagged`.
    /// Default: 1 MiB. Bounds: 64 KiB to 64 MiB.
    pub watch_buffer_bytes_max: usize,
    /// The same, summed over every watcher. Default: 256 MiB. Bounds: 1 MiB to 64 GiB.
    pub watch_buffer_bytes_total_max: usize,
}

/// HTTPS. Both or neither of `cert` and `key`; re-read on SIGHUP (a certificate that does not
/// load then keeps the old one in use).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first. Default: none (plain HTTP).
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Default: none.
    pub key: Option<PathBuf>,
}

/// Bearer tokens. Empty: auth is off (every caller is `anonymous` with the admin role), which is
/// refused on a non-loopback address unless `insecure_no_auth`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenEntry>,
}

/// One token, as `llmcm token new` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Recorded as the actor of the token's commits. 1 to 256 bytes.
    pub name: String,
    /// `reader`, `writer`, `auditor`, `operator` or `admin`.
    pub role: Role,
    /// Key prefixes the token may see; absent or empty: every key.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Hex SHA-256 of the bearer token (64 hex digits).
    pub sha256: String,
    /// Watches this token may hold open at once (beyond: 503). Default: 1000. Bounds: 1 to
    /// `http.watchers_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watches_max: Option<usize>,
}

/// Watches one token may hold at once when its entry does not say.
pub const TOKEN_WATCHES_DEFAULT: usize = 1000;

/// What a token may do (DESIGN.md §3 "Auth").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Writer,
    Auditor,
    Operator,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "auditor" => Ok(Role::Auditor),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: reader, writer, auditor, operator or admin"
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./llmcm-data"),
            listen: "127.0.0.1:7070".into(),
            log_level: "info".into(),
            insecure_no_auth: false,
            insecure_plaintext: false,
            storage: StorageConfig::default(),
            snapshot: SnapshotConfig::default(),
            retention: RetentionConfig::default(),
            backup: BackupConfig::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        StorageConfig {
            segment_bytes_max: log.segment_bytes_max,
            segment_age_max: ConfigDuration::default_of("1h"),
            scrub_every: ConfigDuration::default_of("1d"),
            value_bytes_max: log.value_bytes_max,
            commit_ops_max: log.commit_ops_max,
            commit_bytes_max: log.commit_bytes_max,
            reread_sealed_segments: log.reread_sealed_segments,
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            every_commits: 100_000,
            every: ConfigDuration::default_of("1h"),
            keep: 8,
            io_bytes_per_sec: 256 << 20,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: Retention::Forever,
            every: ConfigDuration::default_of("1h"),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            request_timeout: ConfigDuration::default_of("30s"),
            concurrent_requests_max: 1024,
            shutdown_drain: ConfigDuration::default_of("10s"),
            connections_max: 8192,
            idle_timeout: ConfigDuration::default_of("60s"),
            header_read_timeout: ConfigDuration::default_of("10s"),
            body_read_timeout: ConfigDuration::default_of("30s"),
            send_timeout: ConfigDuration::default_of("30s"),
            watchers_max: 10_000,
            watch_buffer_bytes_max: 1 << 20,
            watch_buffer_bytes_total_max: 256 << 20,
        }
    }
}

/// Fields settable from the environment: `LLMCM_<SECTION>_<FIELD>` (top level: `LLMCM_<FIELD>`).
/// Tokens are not: they belong in the file, which can be kept private.
const ENV_FIELDS: &[(&str, &str)] = &[
    ("", "data_dir"),
    ("", "listen"),
    ("", "log_level"),
    ("", "insecure_no_auth"),
    ("", "insecure_plaintext"),
    ("storage", "segment_bytes_max"),
    ("storage", "segment_age_max"),
    ("storage", "scrub_every"),
    ("storage", "value_bytes_max"),
    ("storage", "commit_ops_max"),
    ("storage", "commit_bytes_max"),
    ("storage", "reread_sealed_segments"),
    ("snapshot", "every_commits"),
    ("snapshot", "every"),
    ("snapshot", "keep"),
    ("snapshot", "io_bytes_per_sec"),
    ("retention", "keep"),
    ("retention", "every"),
    ("backup", "warn_age"),
    ("backup", "poll"),
    ("http", "request_timeout"),
    ("http", "concurrent_requests_max"),
    ("http", "shutdown_drain"),
    ("http", "connections_max"),
    ("http", "idle_timeout"),
    ("http", "header_read_timeout"),
    ("http", "body_read_timeout"),
    ("http", "send_timeout"),
    ("http", "watchers_max"),
    ("http", "watch_buffer_bytes_max"),
    ("http", "watch_buffer_bytes_total_max"),
    ("tls", "cert"),
    ("tls", "key"),
];

impl Config {
    /// Defaults, then `file` if given, then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, |name| std::env::var(name).ok())
    }

    /// `load` with an explicit environment (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        // The defaults as TOML say which type each variable's text must parse as.
        let defaults = toml::Value::try_from(Config::default()).expect("the defaults serialize");
        for (section, field) in ENV_FIELDS {
            let name = if section.is_empty() {
                format!("LLMCM_{}", field.to_uppercase())
            } else {
                format!("LLMCM_{}_{}", section.to_uppercase(), field.to_uppercase())
            };
            let Some(text) = env(&name) else { continue };
            let value = env_value(&defaults, section, field, &text)
                .map_err(|message| ConfigError::Env { name, message })?;
            let target = if section.is_empty() {
                &mut table
            } else {
                table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Invalid {
                        field: section.to_string(),
                        message: "must be a table".into(),
                    })?
            };
            target.insert(field.to_string(), value);
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: file.map(Path::to_path_buf).unwrap_or_default(),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.to_owned(),
            message,
        };
        self.listen_addr()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| invalid("log_level", e.to_string()))?;
        let s = &self.storage;
        check_range(
            "storage.segment_bytes_max",
            s.segment_bytes_max,
            SEGMENT_BYTES_MIN,
            SEGMENT_BYTES_MAX,
        )?;
        check_duration(
            "storage.segment_age_max",
            &s.segment_age_max,
            Duration::from_secs(1),
            Duration::from_secs(30 * 86400),
        )?;
        check_duration(
            "storage.scrub_every",
            &s.scrub_every,
            Duration::ZERO,
            Duration::from_secs(30 * 86400),
        )?;
        check_range(
            "storage.value_bytes_max",
            s.value_bytes_max as u64,
            1,
            storage_format::VALUE_BYTES_MAX as u64,
        )?;
        check_range(
            "storage.commit_ops_max",
            s.commit_ops_max as u64,
            1,
            COMMIT_OPS_MAX as u64,
        )?;
        check_range(
            "storage.commit_bytes_max",
            s.commit_bytes_max as u64,
            4096,
            COMMIT_BYTES_MAX as u64,
        )?;
        let snap = &self.snapshot;
        check_range(
            "snapshot.every_commits",
            snap.every_commits,
            0,
            1_000_000_000,
        )?;
        check_duration(
            "snapshot.every",
            &snap.every,
            Duration::ZERO,
            Duration::from_secs(30 * 86400),
        )?;
        check_range(
            "snapshot.keep",
            snap.keep as u64,
            1,
            crate::store::maintenance::SNAPSHOT_KEEP_MAX as u64,
        )?;
        check_range(
            "snapshot.io_bytes_per_sec",
            snap.io_bytes_per_sec,
            0,
            u64::MAX,
        )?;
        if let Retention::For(keep) = &self.retention.keep {
            check_duration(
                "retention.keep",
                keep,
                Duration::from_secs(3600),
                Duration::from_secs(36500 * 86400),
            )
            .map_err(|e| match e {
                ConfigError::Invalid { field, message } => ConfigError::Invalid {
                    field,
                    message: format!("{message} (or `forever`)"),
                },
                other => other,
            })?;
        }
        check_duration(
            "retention.every",
            &self.retention.every,
            Duration::from_secs(60),
            Duration::from_secs(7 * 86400),
        )?;
        check_duration(
            "backup.warn_age",
            &self.backup.warn_age,
            Duration::from_secs(60),
            Duration::from_secs(365 * 86400),
        )?;
        check_duration(
            "backup.poll",
            &self.backup.poll,
            Duration::from_secs(1),
            Duration::from_secs(86400),
        )?;
        if self.backup.repositories.len() > REPOSITORIES_MAX {
            return Err(invalid(
                "backup.repositories",
                format!("more than {REPOSITORIES_MAX} repositories"),
            ));
        }
        let mut repo_names = std::collections::HashSet::new();
        for (i, r) in self.backup.repositories.iter().enumerate() {
            let field = format!("backup.repositories[{i}]");
            let name_ok = (1..=64).contains(&r.name.len())
                && r.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !name_ok {
                return Err(invalid(
                    &field,
                    "name must be 1 to 64 characters of [A-Za-z0-9._-]".into(),
                ));
            }
            if !repo_names.insert(r.name.as_str()) {
                return Err(invalid(&field, format!("name {:?} is used twice", r.name)));
            }
            if r.url.is_empty() || (r.url.contains("://") && !r.url.starts_with("s3://")) {
                return Err(invalid(
                    &field,
                    "url must be a directory path or s3://bucket/prefix".into(),
                ));
            }
        }
        let h = &self.http;
        check_duration(
            "http.request_timeout",
            &h.request_timeout,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        check_range(
            "http.concurrent_requests_max",
            h.concurrent_requests_max as u64,
            1,
            65536,
        )?;
        check_duration(
            "http.shutdown_drain",
            &h.shutdown_drain,
            Duration::ZERO,
            Duration::from_secs(300),
        )?;
        check_range(
            "http.connections_max",
            h.connections_max as u64,
            16,
            1 << 20,
        )?;
        for (field, value, max_s) in [
            ("http.idle_timeout", &h.idle_timeout, 3600),
            ("http.header_read_timeout", &h.header_read_timeout, 300),
            ("http.body_read_timeout", &h.body_read_timeout, 600),
            ("http.send_timeout", &h.send_timeout, 600),
        ] {
            check_duration(
                field,
                value,
                Duration::from_secs(1),
                Duration::from_secs(max_s),
            )?;
        }
        check_range("http.watchers_max", h.watchers_max as u64, 1, 1_000_000)?;
        check_range(
            "http.watch_buffer_bytes_max",
            h.watch_buffer_bytes_max as u64,
            64 << 10,
            64 << 20,
        )?;
        check_range(
            "http.watch_buffer_bytes_total_max",
            h.watch_buffer_bytes_total_max as u64,
            1 << 20,
            64 << 30,
        )?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls",
                "give both `cert` and `key`, or neither".into(),
            ));
        }
        if self.auth.tokens.len() > TOKENS_MAX {
            return Err(invalid(
                "auth.tokens",
                format!(
                    "{} tokens, over the maximum {TOKENS_MAX}",
                    self.auth.tokens.len()
                ),
            ));
        }
        // A name may appear twice only during a rotation (DESIGN.md §3): the old and the new
        // token of one principal, with the same role, prefixes and watch cap.
        let mut names: std::collections::HashMap<&str, &TokenEntry> =
            std::collections::HashMap::new();
        let mut digests = std::collections::HashSet::new();
        for (i, token) in self.auth.tokens.iter().enumerate() {
            let field = format!("auth.tokens[{i}]");
            if token.name.is_empty() || token.name.len() > 256 {
                return Err(invalid(&field, "name must be 1 to 256 bytes".into()));
            }
            if token.name == crate::token::ANONYMOUS_ACTOR {
                return Err(invalid(&field, "the name `anonymous` is reserved".into()));
            }
            if let Some(other) = names.insert(token.name.as_str(), token)
                && (other.role != token.role
                    || other.prefixes != token.prefixes
                    || other.watches_max != token.watches_max)
            {
                return Err(invalid(
                    &field,
                    format!(
                        "name {:?} is used twice with a different role, prefixes or watches_max \
                         (two entries may share a name only while rotating one principal's token)",
                        token.name
                    ),
                ));
            }
            if !digests.insert(token.sha256.to_ascii_lowercase()) {
                return Err(invalid(
                    &field,
                    "the same token (sha256) is listed twice".into(),
                ));
            }
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(&field, "sha256 must be 64 hex digits".into()));
            }
            if let Some(n) = token.watches_max
                && !(1..=h.watchers_max).contains(&n)
            {
                return Err(invalid(
                    &field,
                    format!(
                        "watches_max must be 1 to http.watchers_max ({})",
                        h.watchers_max
                    ),
                ));
            }
            if token.prefixes.len() > TOKEN_PREFIXES_MAX {
                return Err(invalid(
                    &field,
                    format!("more than {TOKEN_PREFIXES_MAX} prefixes"),
                ));
            }
            if token
                .prefixes
                .iter()
                .any(|p| p.is_empty() || p.len() > storage_format::KEY_BYTES_MAX)
            {
                return Err(invalid(
                    &field,
                    format!(
                        "a prefix must be 1 to {} bytes",
                        storage_format::KEY_BYTES_MAX
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            field: "listen".into(),
            message: format!("{:?} is not an IP:port address: {e}", self.listen),
        })
    }

    /// The log's settings.
    pub fn log_config(&self) -> LogConfig {
        let s = &self.storage;
        LogConfig {
            segment_bytes_max: s.segment_bytes_max,
            segment_age_max_us: s.segment_age_max.micros(),
            value_bytes_max: s.value_bytes_max,
            commit_ops_max: s.commit_ops_max,
            commit_bytes_max: s.commit_bytes_max,
            reread_sealed_segments: s.reread_sealed_segments,
            ..LogConfig::default()
        }
    }

    /// Snapshot and retention settings.
    pub fn maintenance_config(&self) -> crate::store::MaintenanceConfig {
        crate::store::MaintenanceConfig {
            snapshot_every_commits: self.snapshot.every_commits,
            snapshot_every_us: self.snapshot.every.micros(),
            snapshot_keep: self.snapshot.keep,
            retain_us: self.retention_us(),
            compaction_every_us: self.retention.every.micros(),
            io_bytes_per_sec: self.snapshot.io_bytes_per_sec,
            scrub_every_us: self.storage.scrub_every.micros(),
        }
    }

    /// The retention to compact to, `None` for `forever`.
    pub fn retention_us(&self) -> Option<u64> {
        match &self.retention.keep {
            Retention::Forever => None,
            Retention::For(keep) => Some(keep.micros()),
        }
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            len,
            max: CONFIG_FILE_BYTES_MAX,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// An environment variable's text as the TOML value its field expects (the default's type).
fn env_value(
    defaults: &toml::Value,
    section: &str,
    field: &str,
    text: &str,
) -> Result<toml::Value, String> {
    let default = if section.is_empty() {
        defaults.get(field)
    } else {
        defaults.get(section).and_then(|s| s.get(field))
    };
    match default {
        Some(toml::Value::Integer(_)) => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{text:?} is not an integer")),
        Some(toml::Value::Boolean(_)) => match text.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        _ => Ok(toml::Value::String(text.to_owned())),
    }
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            field: field.to_owned(),
            message: format!("{value} is outside {min} to {max}"),
        });
    }
    Ok(())
}

fn check_duration(
    field: &str,
    value: &ConfigDuration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    let invalid = |message| ConfigError::Invalid {
        field: field.to_owned(),
        message,
    };
    let text = value.as_str();
    let value = value.get();
    if value < min || value > max {
        return Err(invalid(format!(
            "{text} is outside {} to {}",
            format_duration(min),
            format_duration(max)
        )));
    }
    Ok(())
}

/// A duration as the configuration writes it (`500ms`, `30s`, `10m`, `1h`, `30d`): parsed once,
/// when the configuration is read (a text that does not parse fails the load), and shown as it
/// was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDuration {
    text: String,
    value: Duration,
}

impl ConfigDuration {
    /// `text`, parsed.
    pub fn parse(text: &str) -> Result<ConfigDuration, String> {
        Ok(ConfigDuration {
            value: parse_duration(text)?,
            text: text.trim().to_owned(),
        })
    }

    /// A default of this file (a constant text, checked by the tests of the defaults).
    fn default_of(text: &'static str) -> ConfigDuration {
        ConfigDuration::parse(text).expect("a default duration parses")
    }

    pub fn get(&self) -> Duration {
        self.value
    }

    pub fn micros(&self) -> u64 {
        u64::try_from(self.value.as_micros()).unwrap_or(u64::MAX)
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ConfigDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `retention.keep`: `forever`, or a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    Forever,
    For(ConfigDuration),
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Retention::Forever => serializer.serialize_str("forever"),
            Retention::For(keep) => keep.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == "forever" {
            return Ok(Retention::Forever);
        }
        ConfigDuration::parse(&text)
            .map(Retention::For)
            .map_err(|e| serde::de::Error::custom(format!("{e} (or `forever`)")))
    }
}

/// Parses `500ms`, `30s`, `10m`, `1h`, `30d` (one number, one unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A duration as the config writes it (`30d`, `5m`, `10s`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86400) && s > 0 {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_shared_only_by_the_two_tokens_of_a_rotation() {
        let entry = |sha: char, role: Role, prefixes: &[&str]| TokenEntry {
            name: "bot".into(),
            role,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            sha256: sha.to_string().repeat(64),
            watches_max: None,
        };
        let with = |tokens: Vec<TokenEntry>| Config {
            auth: AuthConfig { tokens },
            ..Config::default()
        };
        let old = entry('a', Role::Writer, &["app/"]);
        assert!(
            with(vec![old.clone(), entry('b', Role::Writer, &["app/"])])
                .validate()
                .is_ok()
        );
        assert!(
            with(vec![old.clone(), entry('b', Role::Admin, &["app/"])])
                .validate()
                .is_err()
        );
        assert!(
            with(vec![old.clone(), entry('b', Role::Writer, &[])])
                .validate()
                .is_err()
        );
        assert!(with(vec![old.clone(), old]).validate().is_err());
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_with_env(None, |_| None).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen_addr().unwrap().to_string(), "127.0.0.1:7070");
    }

    #[test]
    fn environment_overrides_and_is_checked() {
        let c = Config::load_with_env(None, |name| match name {
            "LLMCM_LISTEN" => Some("127.0.0.1:9000".into()),
            "LLMCM_STORAGE_COMMIT_OPS_MAX" => Some("10".into()),
            "LLMCM_HTTP_REQUEST_TIMEOUT" => Some("5s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.storage.commit_ops_max, 10);
        assert_eq!(c.http.request_timeout.get(), Duration::from_secs(5));
        let err = Config::load_with_env(None, |name| {
            (name == "LLMCM_STORAGE_COMMIT_OPS_MAX").then(|| "5000".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("storage.commit_ops_max"), "{err}");
        let err = Config::load_with_env(None, |name| {
            (name == "LLMCM_STORAGE_COMMIT_OPS_MAX").then(|| "many".into())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("LLMCM_STORAGE_COMMIT_OPS_MAX"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn durations_are_parsed_once_at_load_and_shown_as_written() {
        let c = Config::load_with_env(None, |name| match name {
            "LLMCM_BACKUP_POLL" => Some("90s".into()),
            "LLMCM_RETENTION_KEEP" => Some("30d".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.backup.poll.get(), Duration::from_secs(90));
        assert_eq!(c.backup.poll.to_string(), "90s");
        assert_eq!(c.retention_us(), Some(30 * 86_400_000_000));
        let shown = toml::to_string(&c).unwrap();
        assert!(shown.contains("poll = \"90s\""), "{shown}");
        assert!(shown.contains("keep = \"30d\""), "{shown}");
        assert_eq!(Config::default().retention_us(), None);
        // A text that is not a duration fails the load, naming what is wrong, from the
        // environment and from the file alike.
        for (name, text) in [
            ("LLMCM_HTTP_IDLE_TIMEOUT", "soon"),
            ("LLMCM_RETENTION_KEEP", "5y"),
        ] {
            let err =
                Config::load_with_env(None, |n| (n == name).then(|| text.into())).unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"[http]\nsend_timeout = \"10\"\n").unwrap();
        let err = Config::load_with_env(Some(file.path()), |_| None).unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
        // Bounds are still checked, on the parsed value.
        let err = Config::load_with_env(None, |n| {
            (n == "LLMCM_HTTP_SEND_TIMEOUT").then(|| "1h".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("http.send_timeout"), "{err}");
    }

    #[test]
    fn example_file_is_valid_and_unknown_fields_are_refused() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/llmcm.example.toml");
        Config::load_with_env(Some(&example), |_| None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
        let err = Config::load_with_env(Some(&bad), |_| None).unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }
}
