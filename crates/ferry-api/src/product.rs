//! Which Alibaba Cloud product an RPC request addresses, decided by its `Version` (reference §1.1).
//!
//! One listener serves SMC, ECS, RAM, STS and ActionTrail: the five versions are distinct, so `Version`
//! alone picks the product. An unknown version is `InvalidVersion`, never a guess.

use crate::error::ApiError;

/// A product served by Ferry's RPC API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Product {
    /// Server Migration Center, version `2019-06-01`.
    Smc,
    /// Elastic Compute Service, version `2014-05-26`.
    Ecs,
    /// Resource Access Management, version `2015-05-01`.
    Ram,
    /// ActionTrail (audit), version `2020-07-06`.
    ActionTrail,
    /// Security Token Service (AssumeRole), version `2015-04-01`.
    Sts,
}

impl Product {
    /// All products, for iteration in tests and help texts.
    pub const ALL: [Product; 5] = [
        Product::Smc,
        Product::Ecs,
        Product::Ram,
        Product::ActionTrail,
        Product::Sts,
    ];

    /// The product a `Version` parameter selects.
    ///
    /// Errors: `InvalidVersion` (400) for any other version string (compared exactly).
    pub fn from_version(version: &str) -> Result<Product, ApiError> {
        Product::ALL
            .into_iter()
            .find(|p| p.version() == version)
            .ok_or_else(|| ApiError::invalid_version(version))
    }

    /// The API version string of this product.
    pub fn version(self) -> &'static str {
        match self {
            Product::Smc => "2019-06-01",
            Product::Ecs => "2014-05-26",
            Product::Ram => "2015-05-01",
            Product::ActionTrail => "2020-07-06",
            Product::Sts => "2015-04-01",
        }
    }

    /// The public endpoint host the SDKs know the product by; used as `HostId` in error envelopes
    /// and as `eventSource` in audit records.
    pub fn host_id(self) -> &'static str {
        match self {
            Product::Smc => "smc.aliyuncs.com",
            Product::Ecs => "ecs.aliyuncs.com",
            Product::Ram => "ram.aliyuncs.com",
            Product::ActionTrail => "actiontrail.aliyuncs.com",
            Product::Sts => "sts.aliyuncs.com",
        }
    }

    /// The product name as Alibaba spells it in SDK metadata and `Recommend` links.
    pub fn name(self) -> &'static str {
        match self {
            Product::Smc => "Smc",
            Product::Ecs => "Ecs",
            Product::Ram => "Ram",
            Product::ActionTrail => "Actiontrail",
            Product::Sts => "Sts",
        }
    }

    /// The RAM service prefix of this product's actions (`smc:StartReplicationJob`).
    pub fn ram_service(self) -> &'static str {
        match self {
            Product::Smc => "smc",
            Product::Ecs => "ecs",
            Product::Ram => "ram",
            Product::ActionTrail => "actiontrail",
            Product::Sts => "sts",
        }
    }

    /// The RAM action name for `action` in this product, e.g. `smc:DescribeSourceServers`.
    pub fn ram_action(self, action: &str) -> String {
        format!("{}:{action}", self.ram_service())
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_products_and_back() {
        assert_eq!(Product::from_version("2019-06-01"), Ok(Product::Smc));
        assert_eq!(Product::from_version("2014-05-26"), Ok(Product::Ecs));
        assert_eq!(Product::from_version("2015-05-01"), Ok(Product::Ram));
        assert_eq!(
            Product::from_version("2020-07-06"),
            Ok(Product::ActionTrail)
        );
        assert_eq!(Product::from_version("2015-04-01"), Ok(Product::Sts));
        for p in Product::ALL {
            assert_eq!(Product::from_version(p.version()), Ok(p));
        }
    }

    #[test]
    fn unknown_versions_are_invalid_version() {
        for v in ["", "2019-06-1", "2019-06-01 ", "2016-04-28", "latest"] {
            let e = Product::from_version(v).expect_err(v);
            assert_eq!(e.code, "InvalidVersion");
            assert_eq!(e.status, 400);
            assert!(e.message.contains(&format!("\"{v}\"")), "{}", e.message);
        }
    }

    #[test]
    fn host_ids_and_ram_actions() {
        assert_eq!(Product::Smc.host_id(), "smc.aliyuncs.com");
        assert_eq!(Product::Ecs.host_id(), "ecs.aliyuncs.com");
        assert_eq!(
            Product::Smc.ram_action("StartReplicationJob"),
            "smc:StartReplicationJob"
        );
        assert_eq!(Product::Ram.ram_action("CreateUser"), "ram:CreateUser");
        assert_eq!(Product::Sts.host_id(), "sts.aliyuncs.com");
        assert_eq!(Product::Sts.ram_action("AssumeRole"), "sts:AssumeRole");
    }
}
