//! Helpers shared by the integration tests.

pub mod fakedns;
pub mod unbound;
