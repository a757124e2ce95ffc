//! Types shared by Ferry's agent and server: typed resource IDs, the source inventory and the agent
//! protocol (v1) wire types.
//!
//! Nothing here does I/O. The agent protocol is versioned: a change to a wire type is a new version next to
//! the old one, because old agents keep talking to new servers.

pub mod ids;
pub mod inventory;
pub mod protocol;
