//! Test support shipped with the library so that every crate's tests share it:
//! conformance suites that each backend must pass, and a harness that runs real servers
//! (etcd, an S3-compatible server) as child processes on free loopback ports.

pub mod conformance;
pub mod servers;

pub use conformance::{meta_store_conformance, object_store_conformance};
