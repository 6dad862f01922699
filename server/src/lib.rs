//! amarre: a daemon that lets a person drive CLI coding agents from a phone
//! or another machine on their private network.
//!
//! One folder per concern: [`adapter`] (the WebAssembly adapter host),
//! and the util helpers.

pub mod adapter;
pub mod util;
