//! `[sources.NAME]`: what iocfs expects of a declared feed (README "Sources").
//!
//! ```toml
//! [sources.abuse_ch]
//! expect_every = "1h"   # health reports the source after twice this without a write
//! ```
//! Sources are declared with `mkdir sources/NAME` on the mount, not here: a table for a
//! name that is not declared makes `health` say so.

use std::collections::BTreeMap;
use std::time::Duration;

use super::parse::{duration, Section};
use super::ConfigError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub defs: BTreeMap<String, SourceConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceConfig {
    /// A source with no successful write for twice this is reported by `health`.
    pub expect_every: Option<Duration>,
}

pub(super) fn parse(mut s: Section<'_>, sources: &mut Sources) -> Result<(), ConfigError> {
    for (name, mut t) in s.named_tables()? {
        if !crate::store::state::valid_name(name) {
            return Err(ConfigError::invalid(
                &format!("sources.{name}"),
                format!("{name:?}"),
                "a source name is 1 to 64 of a-z, 0-9, '_' and '-', and not 'local'",
            ));
        }
        let mut c = SourceConfig::default();
        t.set("expect_every", &mut c.expect_every, |x| {
            let d = duration(x)?;
            if d.is_zero() {
                return Err("expected a duration above zero".into());
            }
            Ok(Some(d))
        })?;
        t.finish()?;
        sources.defs.insert(name.to_string(), c);
    }
    s.finish()
}

#[cfg(test)]
mod tests {
    use crate::config::tests::err;
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn expect_every_per_source() {
        let c = Config::from_toml_str("[sources.abuse_ch]\nexpect_every = \"1h\"\n").unwrap();
        assert_eq!(
            c.sources.defs["abuse_ch"].expect_every,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            err("[sources.Bad]\nexpect_every = \"1h\"\n").key(),
            Some("sources.Bad")
        );
        assert!(err("[sources.a]\nexpect_every = \"0s\"\n")
            .to_string()
            .contains("above zero"));
        assert_eq!(
            err("[sources.a]\nexpect = \"1h\"\n").key(),
            Some("sources.a.expect")
        );
    }
}
