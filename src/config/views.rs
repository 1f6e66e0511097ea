//! `[views]` and `[views.NAME]`: the curated lists served as `views/NAME/<type>.txt`.
//!
//! ```toml
//! [views]
//! refresh = "5s"            # a view lags the buckets by at most this plus its build
//! suppress_reserved = true  # never serve special-purpose addresses (`reserved`)
//! [views.fw]
//! types = ["ipv4", "domain"]  # default: all nine
//! buckets = ["live", "chaud"] # default: all four
//! max_age = "7d"              # only indicators last seen within this
//! max_entries = 50000         # per file; over it, the most recently seen win
//! aggregate = true            # ipv4/ipv6: the fewest CIDRs covering the same addresses
//! format = "panos"            # plain | panos
//! placeholder = "# empty"     # the one line an empty file serves instead
//! max_shrink = 0.5            # hold the last version when a rebuild drops more than this
//! sources = ["abuse_ch"]      # only indicators one of these sources lists
//! min_sources = 2             # only indicators at least this many sources list
//! ```
//! A view named `all` (every bucket, every type, plain) exists unless the file defines one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::parse::{as_str, boolean, choice, choices, duration, float, integer, Section};
use super::ConfigError;
use crate::bucket::Bucket;
use crate::ioc::IocType;

/// The view every mount has unless the config defines its own.
pub const ALL_VIEW: &str = "all";
/// Longest view name (it is a directory name and appears in health lines and URLs).
pub const MAX_VIEW_NAME: usize = 64;
/// Longest placeholder line.
pub const MAX_PLACEHOLDER: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Views {
    /// Longest a view lags behind the buckets: a view is rebuilt when its inputs changed
    /// and its last build is at least this old.
    pub refresh: Duration,
    /// Leave the special-purpose address ranges (`crate::reserved`) out of every view.
    pub suppress_reserved: bool,
    /// By name; always holds [`ALL_VIEW`] (the built-in one unless redefined).
    pub defs: BTreeMap<String, View>,
}

impl Default for Views {
    fn default() -> Self {
        let mut defs = BTreeMap::new();
        defs.insert(ALL_VIEW.to_string(), View::default());
        Views {
            refresh: Duration::from_secs(5),
            suppress_reserved: true,
            defs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The files the view serves, one per type.
    pub types: Vec<IocType>,
    pub buckets: Vec<Bucket>,
    /// Only indicators last seen at most this long ago.
    pub max_age: Option<Duration>,
    /// Per file; over it, the most recently seen indicators win.
    pub max_entries: Option<u64>,
    /// ipv4/ipv6: merge into the fewest CIDR networks covering exactly the same addresses.
    pub aggregate: bool,
    pub format: ViewFormat,
    /// The one line an empty file serves instead ("" = an empty file).
    pub placeholder: String,
    /// Hold the last version when a rebuild would remove more than this fraction of a
    /// file's entries at once (None: never hold).
    pub max_shrink: Option<Fraction>,
    /// Only indicators one of these sources lists (empty: any).
    pub sources: Vec<String>,
    /// Only indicators at least this many sources list (`local` counts).
    pub min_sources: u32,
}

impl Default for View {
    fn default() -> Self {
        View {
            types: IocType::ALL.to_vec(),
            buckets: Bucket::ALL.to_vec(),
            max_age: None,
            max_entries: None,
            aggregate: false,
            format: ViewFormat::Plain,
            placeholder: String::new(),
            max_shrink: None,
            sources: Vec::new(),
            min_sources: 1,
        }
    }
}

impl View {
    /// Whether the view selects by source (its builds then need provenance).
    pub fn by_source(&self) -> bool {
        !self.sources.is_empty() || self.min_sources > 1
    }

    /// Whether `other` selects the same indicators as this view does (same buckets, age
    /// and sources): its files can be rendered from one selection.
    pub fn selects_like(&self, other: &View) -> bool {
        self.buckets == other.buckets
            && self.max_age == other.max_age
            && self.sources == other.sources
            && self.min_sources == other.min_sources
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewFormat {
    /// One normalized indicator per line, as stored.
    Plain,
    /// What PAN-OS external dynamic lists accept: URLs without scheme or default port,
    /// entries over 255 bytes dropped (see `views::format`).
    Panos,
}

impl ViewFormat {
    pub const ALL: [ViewFormat; 2] = [ViewFormat::Plain, ViewFormat::Panos];

    pub fn as_str(self) -> &'static str {
        match self {
            ViewFormat::Plain => "plain",
            ViewFormat::Panos => "panos",
        }
    }
}

impl fmt::Display for ViewFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fraction in (0, 1], kept in millionths so the config stays `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction(u32);

impl Fraction {
    pub fn from_f64(f: f64) -> Fraction {
        Fraction((f * 1e6).round().clamp(1.0, 1e6) as u32)
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

/// View names become directory names: `[a-z0-9_-]`, 1 to 64 bytes.
pub fn valid_view_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VIEW_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Read `[views]` into `views` (absent keys keep their defaults).
pub(super) fn parse(mut s: Section<'_>, views: &mut Views) -> Result<(), ConfigError> {
    s.set("refresh", &mut views.refresh, duration)?;
    s.set("suppress_reserved", &mut views.suppress_reserved, boolean)?;
    for (name, mut t) in s.named_tables()? {
        if !valid_view_name(name) {
            return Err(ConfigError::invalid(
                &format!("views.{name}"),
                format!("{name:?}"),
                format!(
                    "a view name is 1 to {MAX_VIEW_NAME} of a-z, 0-9, '_' and '-' (it is a directory name)"
                ),
            ));
        }
        let mut v = View::default();
        parse_view(&mut t, &mut v)?;
        t.finish()?;
        views.defs.insert(name.to_string(), v);
    }
    s.finish()
}

fn parse_view(t: &mut Section<'_>, v: &mut View) -> Result<(), ConfigError> {
    t.set("types", &mut v.types, |x| {
        choices(x, &IocType::ALL, IocType::name)
    })?;
    t.set("buckets", &mut v.buckets, |x| {
        choices(x, &Bucket::ALL, Bucket::name)
    })?;
    t.set("max_age", &mut v.max_age, |x| {
        let d = duration(x)?;
        if d.is_zero() {
            return Err("expected a duration above zero".into());
        }
        Ok(Some(d))
    })?;
    t.set("max_entries", &mut v.max_entries, |x| {
        integer(x, 1, None).map(Some)
    })?;
    t.set("aggregate", &mut v.aggregate, boolean)?;
    t.set("format", &mut v.format, |x| {
        choice(x, &ViewFormat::ALL, &ViewFormat::as_str)
    })?;
    t.set("placeholder", &mut v.placeholder, |x| {
        let p = as_str(x, "expected a string (one line)")?;
        if p.len() > MAX_PLACEHOLDER || p.chars().any(char::is_control) {
            return Err(format!(
                "expected one line of at most {MAX_PLACEHOLDER} bytes without control characters"
            ));
        }
        Ok(p.to_string())
    })?;
    t.set("max_shrink", &mut v.max_shrink, |x| {
        let f = float(x, 0.0, 1.0)?;
        if f <= 0.0 {
            return Err("expected a fraction above 0 and at most 1".into());
        }
        Ok(Some(Fraction::from_f64(f)))
    })?;
    t.set("sources", &mut v.sources, |x| {
        let list = x
            .as_array()
            .ok_or("expected an array of source names")?
            .iter()
            .map(|n| match n.as_str() {
                Some(n) if n == crate::store::state::LOCAL_NAME || crate::store::state::valid_name(n) => {
                    Ok(n.to_string())
                }
                _ => Err(format!(
                    "expected source names (1 to 64 of a-z, 0-9, '_' and '-', or \"local\"), got {n}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err("expected at least one source (leave the key out for any)".into());
        }
        Ok(list)
    })?;
    t.set("min_sources", &mut v.min_sources, |x| {
        integer(x, 1, Some(crate::store::model::MAX_SOURCES as i64 + 1))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::err;
    use crate::config::Config;

    #[test]
    fn the_all_view_exists_unless_redefined() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.views.defs.keys().collect::<Vec<_>>(), ["all"]);
        assert_eq!(c.views.defs["all"], View::default());
        let c = Config::from_toml_str("[views.all]\ntypes = [\"ipv4\"]\n").unwrap();
        assert_eq!(c.views.defs["all"].types, [IocType::Ipv4]);
    }

    #[test]
    fn every_view_key_is_read() {
        let c = Config::from_toml_str(
            r##"
            [views]
            refresh = "0s"
            [views.fw]
            types = ["IPv4", "domain"]
            buckets = ["live", "chaud"]
            max_age = "7d"
            max_entries = 50000
            aggregate = true
            format = "panos"
            placeholder = "# empty"
            max_shrink = 0.5
            "##,
        )
        .unwrap();
        assert_eq!(c.views.refresh, Duration::ZERO);
        let fw = &c.views.defs["fw"];
        assert_eq!(fw.types, [IocType::Ipv4, IocType::Domain]);
        assert_eq!(fw.buckets, [Bucket::Live, Bucket::Chaud]);
        assert_eq!(fw.max_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(fw.max_entries, Some(50_000));
        assert!(fw.aggregate);
        assert_eq!(fw.format, ViewFormat::Panos);
        assert_eq!(fw.placeholder, "# empty");
        assert_eq!(fw.max_shrink.map(Fraction::as_f64), Some(0.5));
        assert!(c.views.defs.contains_key("all"), "the built-in view stays");
    }

    #[test]
    fn bad_view_keys_are_named() {
        for (text, key, reason) in [
            (
                "[views.fw]\ntypes = [\"ip\"]",
                "views.fw.types",
                "\"ip\" is not one of",
            ),
            ("[views.fw]\ntypes = []", "views.fw.types", "at least one"),
            (
                "[views.fw]\ntypes = [\"ipv4\", \"ipv4\"]",
                "views.fw.types",
                "listed twice",
            ),
            (
                "[views.fw]\nbuckets = [\"hot\"]",
                "views.fw.buckets",
                "live, chaud",
            ),
            (
                "[views.fw]\nmax_age = \"0s\"",
                "views.fw.max_age",
                "above zero",
            ),
            (
                "[views.fw]\nmax_entries = 0",
                "views.fw.max_entries",
                "at least 1",
            ),
            (
                "[views.fw]\nformat = \"csv\"",
                "views.fw.format",
                "plain, panos",
            ),
            (
                "[views.fw]\nmax_shrink = 1.5",
                "views.fw.max_shrink",
                "from 0 to 1",
            ),
            (
                "[views.fw]\nmax_shrink = 0",
                "views.fw.max_shrink",
                "above 0",
            ),
            (
                "[views.fw]\nplaceholder = \"a\\nb\"",
                "views.fw.placeholder",
                "one line",
            ),
            (
                "[views.fw]\ntype = [\"ipv4\"]",
                "views.fw.type",
                "did you mean \"types\"",
            ),
            (
                "[views.fw]\nsources = [\"X\"]",
                "views.fw.sources",
                "source names",
            ),
            (
                "[views.fw]\nsources = []",
                "views.fw.sources",
                "at least one",
            ),
            ("[views.fw]\nmin_sources = 0", "views.fw.min_sources", "1"),
            ("[views.Fw]\naggregate = true", "views.Fw", "a-z, 0-9"),
            ("[views]\nfw = 3", "views.fw", "expected a table"),
        ] {
            let e = err(text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains(reason), "{text}: {e}");
        }
    }

    #[test]
    fn view_names_are_directory_safe() {
        assert!(valid_view_name("fw-edge_2"));
        for bad in ["", "FW", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_view_name(bad), "{bad:?}");
        }
    }
}
