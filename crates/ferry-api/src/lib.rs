//! `ferry-api`: the edge of Ferry's public RPC API, wire-compatible with Alibaba Cloud's RPC APIs
//! (SMC 2019-06-01, ECS 2014-05-26, RAM 2015-05-01, ActionTrail 2020-07-06).
//!
//! This crate turns an HTTP request into something the application layer can trust and turns the
//! application's answer back into the bytes the official SDKs expect:
//!
//! * [`params`]: query ∪ form body, flattened list and struct accessors, typed getters.
//! * [`sign`]: v1 (HMAC-SHA1) and v3 (`ACS3-HMAC-SHA256`) signatures, server verifier and client signer.
//! * [`error`]: [`ApiError`], the one error type clients see, and its JSON/XML envelope.
//! * [`response`]: success rendering (JSON, or XML for `Format=XML`), request IDs, timestamps.
//! * [`product`]: which product a `Version` addresses.
//!
//! It is pure: no HTTP server, no database, no clock or randomness except where a function says so
//! (`new_request_id`, the client signers without `_at`). Shared state, such as the nonce replay cache,
//! access key status and RAM policy evaluation, belongs to the server; [`sign::verify`] returns what
//! the server needs to apply them. See `docs/api-gateway.md` for the choices made here.

pub mod error;
pub mod params;
pub mod product;
pub mod response;
pub mod sign;

pub use error::ApiError;
pub use params::{ActionVersion, Params};
pub use product::Product;
pub use response::{Format, fmt_time, new_request_id, parse_time, render_ok, wrap_list};
pub use sign::{Secret, SignatureVersion, Verified, verify};
