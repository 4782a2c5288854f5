//! Integration tests of `ferrymq-auth` through its public API.

mod store;
