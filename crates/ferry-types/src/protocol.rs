//! Agent protocol v1.
