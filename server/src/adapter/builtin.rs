//! The adapter components embedded in the binary (built from
//! `adapters-wasm/` by `server/build.rs`), so the daemon needs no files
//! beside it.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Where the build put every component as a file (`<target>/adapters`).
pub const BUILT_ADAPTERS_DIR: &str = env!("AMARRE_ADAPTERS_DIR");

/// The bytes of a built-in component.
pub fn bytes(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of all built-ins.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(n, _)| *n).collect()
}
