//! Helpers the QEMU test files share.

use std::process::Command;

use ferry_vm::Driver;
pub use ferry_vm::qemu_missing;

/// Kills the test's QEMU if the test fails half-way (QEMU is a daemon: nothing else would).
pub struct KillOnDrop(pub Driver, pub String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.0.find(&self.1) {
            let _ = Command::new("kill")
                .args(["-9", &r.pid.to_string()])
                .status();
        }
    }
}
