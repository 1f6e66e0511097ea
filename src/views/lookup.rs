//! Whether a published view file includes a value, for `.iocfs/lookup/VALUE`'s `views`.
//!
//! The files are the truth (caps, the shrink guard, suppression all shaped them), so the
//! answer comes from them, without reading them whole per question: an address file
//! answers by the addresses it covers (an interval set), any other file by a binary search
//! of its lines, which are sorted bytewise, over a sparse index of them in memory
//! ([`LineIndex`]). Both are built at the first lookup that needs them, once per version.

use super::disk::ViewFile;
use super::format::{self, Formatted};
use super::line_index::LineIndex;
use super::select::is_ip;
use super::Views;
use crate::cidr::{IntervalSet, Net};
use crate::error::Result;
use crate::ioc::IocType;

impl ViewFile {
    /// The addresses an ipv4/ipv6 file covers (its lines as networks, merged).
    pub fn coverage(&self) -> Result<&IntervalSet> {
        if let Some(set) = self.coverage.get() {
            return Ok(set);
        }
        let content = self.read_at(0, self.len as usize)?;
        let set = IntervalSet::build(
            crate::store::tier::lines(&content)
                .filter_map(|l| std::str::from_utf8(l).ok()?.parse::<Net>().ok()),
        );
        // Two builds racing make the same set; the first one stays.
        Ok(self.coverage.get_or_init(|| set))
    }

    /// The first line starting in each block of the file (see [`LineIndex`]).
    fn line_index(&self) -> Result<&LineIndex> {
        if let Some(index) = self.line_index.get() {
            return Ok(index);
        }
        let index = LineIndex::build(self.len, |at, size| self.read_at(at, size))?;
        Ok(self.line_index.get_or_init(|| index))
    }

    /// Whether `needle` is one of the file's lines. The lines must be sorted bytewise.
    pub fn has_line(&self, needle: &[u8]) -> Result<bool> {
        let Some((start, end)) = self.line_index()?.block_of(needle, self.len) else {
            return Ok(false);
        };
        let bytes = self.read_at(start, (end - start) as usize)?;
        Ok(bytes.split(|&b| b == b'\n').any(|line| line == needle))
    }
}

impl Views {
    /// The views whose file of `ty` includes `value` (a normalized value of `ty`), or one
    /// of `covering` (stored entries that cover it, e.g. a listed `*.example.com` for
    /// `www.example.com`): what a firewall fetching that file would match.
    pub fn including(&self, ty: IocType, value: &str, covering: &[String]) -> Vec<String> {
        let net = if is_ip(ty) {
            value.parse::<Net>().ok()
        } else {
            None
        };
        let config = self.config();
        let mut out = Vec::new();
        for (name, def) in &config.defs {
            let Some(file) = self.file(name, ty) else {
                continue;
            };
            let found = match net {
                Some(net) => file.coverage().map(|c| c.contains_net(&net)),
                None => std::iter::once(value)
                    .chain(covering.iter().map(String::as_str))
                    .try_fold(false, |found, v| {
                        if found {
                            return Ok(true);
                        }
                        match format::apply(def.format, ty, v.as_bytes()) {
                            Formatted::Same(line) => file.has_line(line),
                            Formatted::Rewritten(line) => file.has_line(&line),
                            Formatted::Dropped(_) => Ok(false),
                        }
                    }),
            };
            match found {
                Ok(true) => out.push(name.clone()),
                Ok(false) => {}
                Err(e) => crate::lograte::warn(|| format!("lookup in views/{name}: {e}")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::disk::Disk;
    use super::*;
    use std::io::Write;

    fn file(lines: &[String]) -> (tempfile::TempDir, ViewFile) {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(&crate::disk::Disk::real(), dir.path()).unwrap();
        let mut staged = disk.stage("t", IocType::Domain).unwrap();
        for l in lines {
            writeln!(staged, "{l}").unwrap();
        }
        let f = disk
            .commit("t", IocType::Domain, staged, 1, 1, lines.len() as u64)
            .unwrap();
        (dir, f)
    }

    #[test]
    fn binary_search_finds_every_line_and_nothing_else() {
        // Lines of varied lengths, so the midpoints land anywhere in them.
        let mut lines: Vec<String> = (0..5000)
            .map(|i: u32| format!("{}.{i}.example", "x".repeat((i % 97) as usize)))
            .collect();
        lines.sort();
        let (_dir, f) = file(&lines);
        for l in &lines {
            assert!(f.has_line(l.as_bytes()).unwrap(), "{l}");
        }
        for absent in ["", "a", "zzzz", "x.1.example.", "0.example", "xx.1.example"] {
            assert!(!f.has_line(absent.as_bytes()).unwrap(), "{absent}");
        }
        let (_d, empty) = file(&[]);
        assert!(!empty.has_line(b"a").unwrap());
        // Lines of up to 4,000 bytes over more than one 1 MiB read of the index build.
        let mut long: Vec<String> = (0..700u32)
            .map(|i| format!("{i:04}{}", "y".repeat((i as usize * 37) % 4000)))
            .collect();
        long.sort();
        let (_d, f) = file(&long);
        assert!(f.len > 1 << 20);
        for l in &long {
            assert!(f.has_line(l.as_bytes()).unwrap(), "{}", &l[..4]);
        }
        assert!(!f.has_line(b"0001").unwrap());
        let (_d, one) = file(&["only".into()]);
        assert!(one.has_line(b"only").unwrap());
        assert!(!one.has_line(b"onl").unwrap());
    }
}
