//! The Stack controller: renders a Stack, observes each selected host with one shared listing,
//! plans with no I/O, executes the plan, and writes status that tells the truth.

pub mod plan;
pub mod render;
