//! `ferry-agent`: the agent that runs as root on each source server to be migrated.
//!
//! It describes the server (inventory), checks that it can be migrated (prechecks), registers with an
//! activation code, and replicates its disks to a Ferry server when told to (agent protocol v1,
//! `docs/agent-protocol.md`). It only reads the source: nothing here writes to a disk or changes the
//! system's configuration, and it never needs more than outbound HTTPS.

pub mod conn;
pub mod daemon;
pub mod inventory;
pub mod precheck;
pub mod replicate;
