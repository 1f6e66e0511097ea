//! The hand-written walk over the parsed [`toml::Table`]: [`Section`] reads one table and
//! records the keys it asked for, and the converters turn one TOML value into a field or
//! into the "expected …" phrase that ends up in a [`ConfigError`].

use std::fmt;
use std::time::Duration;

use toml::{Table, Value};

use super::{parse_duration, parse_size, ConfigError};

const DURATION_EXPECTED: &str = r#"expected a duration like "24h", "7d" or "90s""#;
const SIZE_EXPECTED: &str = r#"expected a size like "256MiB", "64KiB" or a number of bytes"#;

/// One TOML table being read. Each key read is recorded, so the list of
/// valid keys printed for an unknown key can never drift from the parser.
pub(super) struct Section<'a> {
    /// The table's dotted path ("" for the top level).
    name: String,
    table: &'a Table,
    known: Vec<&'a str>,
}

impl<'a> Section<'a> {
    pub(super) fn new(name: impl Into<String>, table: &'a Table) -> Self {
        Section {
            name: name.into(),
            table,
            known: Vec::new(),
        }
    }

    pub(super) fn path(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    fn take(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.table.get(key)
    }

    /// The keys no `set`/`table` call asked for yet, as sub-tables (named entries such as
    /// `[views.NAME]`); they count as known from now on.
    pub(super) fn named_tables(&mut self) -> Result<Vec<(&'a str, Section<'a>)>, ConfigError> {
        let mut out = Vec::new();
        let table: &'a Table = self.table;
        for (key, value) in table {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let Value::Table(t) = value else {
                return Err(ConfigError::invalid(
                    &self.path(key),
                    render(value),
                    "expected a table",
                ));
            };
            out.push((key.as_str(), Section::new(self.path(key), t)));
        }
        for (key, _) in &out {
            self.known.push(key);
        }
        Ok(out)
    }

    /// Overwrites `out` if `key` is present; `conv` returns the "expected …" phrase on failure.
    pub(super) fn set<T>(
        &mut self,
        key: &'static str,
        out: &mut T,
        conv: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        if let Some(value) = self.take(key) {
            *out = conv(value)
                .map_err(|reason| ConfigError::invalid(&self.path(key), render(value), reason))?;
        }
        Ok(())
    }

    pub(super) fn table(&mut self, key: &'static str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(Section::new(self.path(key), t))),
            Some(v) => Err(ConfigError::invalid(
                &self.path(key),
                render(v),
                "expected a table",
            )),
        }
    }

    /// Fails on the first key (in sorted order) that no `set`/`table` call asked for.
    pub(super) fn finish(self) -> Result<(), ConfigError> {
        match self
            .table
            .keys()
            .find(|k| !self.known.contains(&k.as_str()))
        {
            None => Ok(()),
            Some(unknown) => Err(ConfigError::UnknownKey {
                key: self.path(unknown),
                expected: self.known.join(", "),
                suggestion: suggest(unknown, &self.known).map(str::to_string),
            }),
        }
    }
}

/// The closest valid key if it is within two edits (catches typos like `mod`).
fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = Vec::with_capacity(prev.len());
            cur.push(i + 1);
            for ((cb, diag), up) in b.iter().zip(&prev).zip(prev.iter().skip(1)) {
                let left = cur.last().copied().unwrap_or(usize::MAX - 1);
                cur.push((up + 1).min(left + 1).min(diag + usize::from(ca != *cb)));
            }
            prev = cur;
        }
        prev.last().copied().unwrap_or(usize::MAX)
    };
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A value as the admin wrote it; arrays and tables are abbreviated.
pub(super) fn render(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(_) => "[...]".to_string(),
        Value::Table(_) => "{...}".to_string(),
    }
}

pub(super) fn quote(s: &str) -> String {
    format!("{s:?}")
}

pub(super) fn as_str(v: &Value, expected: impl Into<String>) -> Result<&str, String> {
    v.as_str().ok_or_else(|| expected.into())
}

pub(super) fn duration(v: &Value) -> Result<Duration, String> {
    parse_duration(as_str(v, DURATION_EXPECTED)?).map_err(|e| format!("{DURATION_EXPECTED} ({e})"))
}

pub(super) fn size(v: &Value) -> Result<u64, String> {
    match v {
        Value::Integer(n) => u64::try_from(*n).map_err(|_| SIZE_EXPECTED.to_string()),
        Value::String(s) => parse_size(s).map_err(|e| format!("{SIZE_EXPECTED} ({e})")),
        _ => Err(SIZE_EXPECTED.to_string()),
    }
}

pub(super) fn boolean(v: &Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(*b),
        _ => Err("expected true or false".to_string()),
    }
}

pub(super) fn float(v: &Value, min: f64, max: f64) -> Result<f64, String> {
    let expected = || format!("expected a number from {min} to {max}");
    let f = match v {
        Value::Float(f) => *f,
        Value::Integer(i) => *i as f64,
        _ => return Err(expected()),
    };
    if f.is_finite() && f >= min && f <= max {
        Ok(f)
    } else {
        Err(expected())
    }
}

/// A list of names, each one of `all` (case-insensitive), in the order given, no repeats.
pub(super) fn choices<T: Copy + PartialEq>(
    v: &Value,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<Vec<T>, String> {
    let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
    let expected = || format!("expected a list of {}", names.join(", "));
    let Value::Array(items) = v else {
        return Err(expected());
    };
    let mut out = Vec::new();
    for item in items {
        let one = choice(item, all, &name)
            .map_err(|_| format!("{} is not one of {}", render(item), names.join(", ")))?;
        if out.contains(&one) {
            return Err(format!("{} is listed twice", render(item)));
        }
        out.push(one);
    }
    if out.is_empty() {
        return Err(format!("{} (at least one)", expected()));
    }
    Ok(out)
}

pub(super) fn integer<T: TryFrom<i64>>(v: &Value, min: i64, max: Option<i64>) -> Result<T, String> {
    let expected = || range_reason("an integer", min, max);
    match v {
        Value::Integer(n) if *n >= min && max.is_none_or(|max| *n <= max) => {
            T::try_from(*n).map_err(|_| expected())
        }
        _ => Err(expected()),
    }
}

/// "expected an integer from 0 to 32" / "expected a size of at least 1MiB".
pub(super) fn range_reason(
    what: &str,
    min: impl fmt::Display,
    max: Option<impl fmt::Display>,
) -> String {
    match max {
        Some(max) => format!("expected {what} from {min} to {max}"),
        None => format!("expected {what} of at least {min}"),
    }
}

pub(super) fn choice<T: Copy>(
    v: &Value,
    all: &[T],
    name: &impl Fn(T) -> &'static str,
) -> Result<T, String> {
    let names: Vec<&str> = all.iter().map(|t| name(*t)).collect();
    let expected = || format!("expected one of {}", names.join(", "));
    let s = v.as_str().ok_or_else(expected)?;
    all.iter()
        .copied()
        .find(|t| name(*t).eq_ignore_ascii_case(s.trim()))
        .ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::err;

    #[test]
    fn unknown_keys_name_the_dotted_key_and_the_valid_ones() {
        let e = err("[durability]\nmod = \"always\"");
        assert_eq!(e.key(), Some("durability.mod"));
        assert_eq!(
            e.to_string(),
            "unknown key \"durability.mod\": expected one of mode, batch_window, sync_interval, \
             commit_interval, checkpoint_interval, segment_size, checkpoint_records \
             (did you mean \"mode\"?)"
        );

        let e = err("datadir = \"/x\"");
        assert_eq!(e.key(), Some("datadir"));
        let msg = e.to_string();
        assert!(msg.contains("expected one of data_dir, retention, durability, aging, cache, tiers, ingest, mount, log"), "{msg}");
        assert!(msg.contains("did you mean \"data_dir\""), "{msg}");

        let e = err("[logging]\nlevel = \"info\"");
        assert_eq!(e.key(), Some("logging"));
        assert!(!e.to_string().contains("did you mean"), "{e}");

        let e = err("[mount]\nthreads = 4\nreadonly = true");
        assert_eq!(e.key(), Some("mount.readonly"));
        assert!(
            e.to_string()
                .contains("allow_other, uid, gid, file_mode, threads"),
            "{e}"
        );

        let e = err("[durability.extra]\nx = 1");
        assert_eq!(e.key(), Some("durability.extra"));

        let e = err("[log]\nlevel = \"info\"\n[retention]\nfoo = \"1d\"");
        assert_eq!(e.key(), Some("retention.foo"));
    }
}
