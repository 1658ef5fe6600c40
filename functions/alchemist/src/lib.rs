//! The embedded Audio-Alchemist: every function in one process.
//!
//! # Layout
//!
//! - [`stack`] opens the embedded defaults (SQLite, a blob directory, the
//!   in-process broker) in a data directory and wires the four functions to
//!   them, with routing read from the Trigger manifests.
//! - [`batch`] converts files through that pipeline, as `alchemist convert` does.
//! - [`services`] runs every function as its own process on the real
//!   services, as `alchemist dev --services` does.
//!
//! The binary in `main.rs` parses the command line and calls these.

pub mod batch;
pub mod services;
pub mod stack;
