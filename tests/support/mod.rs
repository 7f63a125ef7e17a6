//! Helpers shared by the integration tests. Each test file includes this with `mod support;`.
#![allow(dead_code)]

pub mod calls;
pub mod csi;
pub mod easyfuse;
pub mod gated;
pub mod host;
pub mod isolator;
pub mod plugin;
pub mod zookeeper;
