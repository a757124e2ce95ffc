//! Typed IDs.
