//! Wildcard matching of actions and resource ARNs.
//!
//! `*` matches any run of characters (including none) and `?` exactly one, anywhere in a pattern.
//! Actions (`<service>:<Api>`) match case-insensitively in both parts, as Alibaba RAM does. Resource ARNs
//! (`acs:<service>:<region>:<account>:<relative-id>`) match segment by segment, so a wildcard never
//! crosses a `:` of the first four segments; the service segment ignores case, the others do not (relative
//! ids such as OSS object names are case-sensitive). A bare `*` matches every action or resource.

/// `pattern` matches all of `text` (`*` = any run, `?` = one character).
///
/// Greedy with backtracking to the last `*`: O(len(pattern) * len(text)) in the worst case, no recursion.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position after the last `*` seen, and the text position it is currently assumed to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if let Some((after_star, covered)) = star {
            // Let the last `*` swallow one more character and retry from there.
            pi = after_star;
            ti = covered + 1;
            star = Some((after_star, covered + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A validated `Action` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActionPattern {
    pub(crate) text: String,
    /// Lower-cased service and API parts; `None` for the bare `*`.
    parts: Option<(String, String)>,
}

impl ActionPattern {
    /// Validates `<service>:<Api>` (either part may hold wildcards) or a bare `*`.
    /// The error is the problem text; the caller adds the location.
    pub(crate) fn parse(text: &str) -> Result<ActionPattern, String> {
        if text == "*" {
            return Ok(ActionPattern {
                text: text.to_owned(),
                parts: None,
            });
        }
        let Some((service, api)) = text.split_once(':') else {
            return Err(format!(
                "action {text:?} has no service prefix: write <service>:<ApiName>, e.g. \"smc:DescribeSourceServers\", or \"*\""
            ));
        };
        if service.is_empty() || api.is_empty() || text.chars().any(char::is_whitespace) {
            return Err(format!(
                "action {text:?} is not of the form <service>:<ApiName> (both parts non-empty, no spaces), e.g. \"ecs:Describe*\""
            ));
        }
        Ok(ActionPattern {
            text: text.to_owned(),
            parts: Some((service.to_lowercase(), api.to_lowercase())),
        })
    }

    /// Does this pattern cover `action` (`smc:StartReplicationJob`)? Case-insensitive.
    pub(crate) fn matches(&self, action: &str) -> bool {
        let Some((service, api)) = &self.parts else {
            return true;
        };
        let Some((req_service, req_api)) = action.split_once(':') else {
            return false;
        };
        glob(service, &req_service.to_lowercase()) && glob(api, &req_api.to_lowercase())
    }
}

/// The five segments of an ARN, or `None` when `text` is not `acs:<service>:<region>:<account>:<relative>`.
/// The relative id is everything after the fourth `:` and may itself contain `:`.
pub(crate) fn split_arn(text: &str) -> Option<[&str; 5]> {
    let mut it = text.splitn(5, ':');
    let segs = [it.next()?, it.next()?, it.next()?, it.next()?, it.next()?];
    Some(segs)
}

/// A validated `Resource` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourcePattern {
    pub(crate) text: String,
    /// Segments with the `acs` and service parts lower-cased; `None` for the bare `*`.
    segs: Option<[String; 5]>,
}

impl ResourcePattern {
    /// Validates an ARN pattern or a bare `*`. The error is the problem text; the caller adds the location.
    pub(crate) fn parse(text: &str) -> Result<ResourcePattern, String> {
        if text == "*" {
            return Ok(ResourcePattern {
                text: text.to_owned(),
                segs: None,
            });
        }
        let malformed = || {
            format!(
                "resource {text:?} is not an ARN: write acs:<service>:<region>:<account-id>:<relative-id> \
                 (wildcards allowed, region may be empty), e.g. \"acs:smc:*:*:sourceServer/*\", or \"*\""
            )
        };
        let [acs, service, region, account, relative] = split_arn(text).ok_or_else(malformed)?;
        if !acs.eq_ignore_ascii_case("acs")
            || service.is_empty()
            || account.is_empty()
            || relative.is_empty()
            || text.chars().any(char::is_whitespace)
        {
            return Err(malformed());
        }
        Ok(ResourcePattern {
            text: text.to_owned(),
            segs: Some([
                acs.to_lowercase(),
                service.to_lowercase(),
                region.to_owned(),
                account.to_owned(),
                relative.to_owned(),
            ]),
        })
    }

    /// Does this pattern cover the resource ARN `resource`? A resource that is not an ARN is covered only
    /// by the bare `*`.
    pub(crate) fn matches(&self, resource: &str) -> bool {
        let Some(segs) = &self.segs else {
            return true;
        };
        let Some(req) = split_arn(resource) else {
            return false;
        };
        glob(&segs[0], &req[0].to_lowercase())
            && glob(&segs[1], &req[1].to_lowercase())
            && glob(&segs[2], req[2])
            && glob(&segs[3], req[3])
            && glob(&segs[4], req[4])
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_basics() {
        assert!(glob("*", ""));
        assert!(glob("*", "anything"));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a*c", "ac"));
        assert!(!glob("a*c", "acb"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*b*b*", "abcbd"));
        assert!(!glob("*b*b*", "abcd"));
        assert!(glob("s-??", "s-12"));
        assert!(!glob("s-??", "s-123"));
        assert!(glob("", ""));
        assert!(!glob("", "a"));
        assert!(glob("**", "x"));
    }
}
