//! The built-in System policies (`PolicyType` `System`), named and worded as Alibaba Cloud's.
//!
//! Invariant: every document here parses with [`crate::PolicyDocument::parse`] (a test checks it) and is
//! already in canonical form, so `GetPolicy` returns it byte for byte. They are constants: System policies
//! cannot be created, changed or deleted through the API.

/// One built-in policy.
#[derive(Debug)]
pub struct SystemPolicy {
    /// Policy name, e.g. `AliyunSMCFullAccess` (compared exactly).
    pub name: &'static str,
    /// The description `GetPolicy`/`ListPolicies` show.
    pub description: &'static str,
    /// The policy document (canonical JSON, `Version` "1").
    pub document: &'static str,
}

static ALL: &[SystemPolicy] = &[
    SystemPolicy {
        name: "AdministratorAccess",
        description: "Provides full access to all Alibaba Cloud services and resources.",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunSMCFullAccess",
        description: "Provides full access to Server Migration Center (SMC), and to the ECS and RAM \
                      operations a migration needs.",
        document: concat!(
            r#"{"Version":"1","Statement":["#,
            r#"{"Effect":"Allow","Action":"smc:*","Resource":"*"},"#,
            r#"{"Effect":"Allow","Action":["ecs:Describe*","ecs:CreateImage","ecs:ImportImage","#,
            r#""ecs:ExportImage","ecs:DeleteImage","ecs:CreateSnapshot","ecs:DeleteSnapshot","#,
            r#""ecs:RunInstances","ecs:CreateInstance","ecs:StartInstance","ecs:StopInstance","#,
            r#""ecs:DeleteInstance","ecs:DescribeTask*"],"Resource":"*"},"#,
            r#"{"Effect":"Allow","Action":["ram:GetRole","ram:ListRoles"],"Resource":"*"},"#,
            r#"{"Effect":"Allow","Action":"ram:PassRole","Resource":"*","#,
            r#""Condition":{"StringEquals":{"acs:Service":["smc.aliyuncs.com","ecs.aliyuncs.com"]}}}"#,
            r#"]}"#
        ),
    },
    SystemPolicy {
        name: "AliyunSMCReadOnlyAccess",
        description: "Provides read-only access to Server Migration Center (SMC).",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["smc:Describe*","smc:List*"],"Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunECSFullAccess",
        description: "Provides full access to Elastic Compute Service (ECS).",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunECSReadOnlyAccess",
        description: "Provides read-only access to Elastic Compute Service (ECS).",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunRAMFullAccess",
        description: "Provides full access to Resource Access Management (RAM): users, access keys, \
                      policies and roles.",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ram:*","Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunRAMReadOnlyAccess",
        description: "Provides read-only access to Resource Access Management (RAM).",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["ram:Get*","ram:List*"],"Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunActionTrailFullAccess",
        description: "Provides full access to ActionTrail.",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"actiontrail:*","Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunActionTrailReadOnlyAccess",
        description: "Provides read-only access to ActionTrail: looking up audit events.",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["actiontrail:LookupEvents","actiontrail:Describe*","actiontrail:Get*","actiontrail:List*"],"Resource":"*"}]}"#,
    },
    SystemPolicy {
        name: "AliyunSTSAssumeRoleAccess",
        description: "Provides access to assume RAM roles through the Security Token Service (STS).",
        document: r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#,
    },
];

/// Every system policy, in a stable order.
pub fn all() -> &'static [SystemPolicy] {
    ALL
}

/// The system policy named exactly `name`, if there is one.
pub fn get(name: &str) -> Option<&'static SystemPolicy> {
    ALL.iter().find(|p| p.name == name)
}
