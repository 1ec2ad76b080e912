//! The Host controller (being built).

pub mod connection;
pub mod orphans;
