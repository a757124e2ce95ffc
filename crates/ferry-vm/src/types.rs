//! The instance types Ferry offers: a static table named like ECS's, so that tooling written for ECS
//! can pass the same `InstanceType` values.
//!
//! Invariant: names are unique and every entry has at least one vCPU and 128 MiB of memory.

/// One instance type: vCPUs and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    /// ECS-style name, e.g. `ecs.t1.small`.
    pub name: &'static str,
    /// Virtual CPUs (`-smp`).
    pub cpu: u32,
    /// Memory in MiB (`-m`).
    pub memory_mib: u64,
}

const fn t(name: &'static str, cpu: u32, memory_mib: u64) -> InstanceType {
    InstanceType {
        name,
        cpu,
        memory_mib,
    }
}

/// Every instance type, smallest first. `ecs.t1.nano` (128 MiB) is Ferry's own: large enough for a
/// firmware-only smoke test or a minimal guest, used by the tests and by quick boot checks.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    t("ecs.t1.nano", 1, 128),
    t("ecs.t1.xsmall", 1, 512),
    t("ecs.t1.small", 1, 1024),
    t("ecs.t1.medium", 1, 2048),
    t("ecs.c6.large", 2, 4096),
    t("ecs.g6.large", 2, 8192),
    t("ecs.c6.xlarge", 4, 8192),
    t("ecs.g6.xlarge", 4, 16384),
];

/// The instance type called `name` (exact, case-sensitive like ECS).
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sizes_sane() {
        for (i, a) in INSTANCE_TYPES.iter().enumerate() {
            assert!(a.cpu >= 1 && a.memory_mib >= 128, "{a:?}");
            assert!(
                INSTANCE_TYPES[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
        assert_eq!(
            instance_type("ecs.t1.small").map(|t| t.memory_mib),
            Some(1024)
        );
        assert!(instance_type("ECS.T1.SMALL").is_none());
        assert!(instance_type("ecs.t1.huge").is_none());
    }
}
