//! The Lease controller. So far: the persistent callback outbox ([`callbacks`]).

pub mod callbacks;
