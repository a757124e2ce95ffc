//! Helpers the QEMU test files share.

use std::process::Command;

use ferry_vm::Driver;

/// True (after printing why the test is skipped) when `qemu-system-x86_64` is not installed.
pub fn qemu_missing(test: &str) -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "SKIPPED {test}: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        );
    }
    !found
}

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
