//! Source server inventory (being written).
