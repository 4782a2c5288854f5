//! Integration tests of `ferrymq-auth` through its public API.

mod definitions;
mod garbage;
mod scram;
mod store;
