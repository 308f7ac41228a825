//! LLM Config Manager: a configuration store whose every change is an immutable, hash-chained
//! commit in a segmented append-only log (see `docs/architecture.md`).
//!
//! Layers only look down (docs/architecture.md "Layers"; `tests/cli/architecture.rs` holds the code
//! to the map): `cli` → `api` → `backup` → `store` → the engine (`index`, `log`, `image`, `fs`).

pub mod api;
pub mod backup;
pub mod chain;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod store;
pub mod token;

/// The storage engine's own modules: public with the `internals` feature (the engine's tests,
/// tools/), private to the crate otherwise — everything above the engine goes through `store`.
macro_rules! engine_modules {
    ($($name:ident),*) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    )*};
}
engine_modules!(fault, fs, image, index, log);

pub use storage_format;
