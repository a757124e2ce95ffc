//! `ferry-agent`: the agent that runs as root on each source server to be migrated.
//!
//! It describes the server (inventory), checks that it can be migrated (prechecks) and, later, replicates its
//! disks to a Ferry server. It only reads the source: nothing here writes to a disk or changes the system's
//! configuration, and it never needs more than outbound HTTPS.

pub mod inventory;
pub mod precheck;
