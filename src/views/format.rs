//! Vendor formats of view files.
//!
//! `panos`: what PAN-OS external dynamic lists accept (Palo Alto's "Formatting Guidelines
//! for an External Dynamic List"). URL lists take entries without a scheme (`http://` is
//! not allowed) and match case-insensitively; iocfs also drops a default port (`:80` for
//! http, `:443` for https), which the firewall would otherwise read as part of the host.
//! Every entry is at most 255 bytes. In URL and domain lists `*` and `^` standing alone
//! between the separators `. / ? & = ; +` are wildcards, so such an entry would match far
//! more than the indicator: it is dropped. Domain lists take names and `*.name` as stored;
//! IP lists take addresses and CIDR networks as stored. Other types have no PAN-OS list
//! and are served as in `plain`.

use crate::config::views::ViewFormat;
use crate::ioc::IocType;

/// Longest entry PAN-OS takes in an external dynamic list.
pub const PANOS_MAX_ENTRY: usize = 255;

/// What a format does with one entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Formatted<'a> {
    Same(&'a [u8]),
    Rewritten(Vec<u8>),
    /// Not representable; the reason is counted in the file's stats.
    Dropped(&'static str),
}

pub fn apply<'a>(format: ViewFormat, ty: IocType, value: &'a [u8]) -> Formatted<'a> {
    match (format, ty) {
        (ViewFormat::Plain, _) => Formatted::Same(value),
        (ViewFormat::Panos, IocType::Url) => panos_url(value),
        (ViewFormat::Panos, IocType::Domain) => panos_entry(value, Formatted::Same(value)),
        (ViewFormat::Panos, _) => Formatted::Same(value),
    }
}

fn panos_url(url: &[u8]) -> Formatted<'_> {
    let Some(sep) = find(url, b"://") else {
        return panos_entry(url, Formatted::Same(url));
    };
    let scheme = &url[..sep];
    let rest = &url[sep + 3..];
    let host_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    let default_port: &[u8] = match scheme {
        b"http" => b":80",
        b"https" => b":443",
        _ => b"",
    };
    let host = match host.strip_suffix(default_port) {
        Some(h) if !default_port.is_empty() => h,
        _ => host,
    };
    let mut out = Vec::with_capacity(host.len() + path.len());
    out.extend_from_slice(host);
    out.extend_from_slice(path);
    panos_entry(url, Formatted::Rewritten(out))
}

/// The length and wildcard checks every PAN-OS URL or domain entry passes.
fn panos_entry<'a>(original: &'a [u8], entry: Formatted<'a>) -> Formatted<'a> {
    let bytes: &[u8] = match &entry {
        Formatted::Same(b) => b,
        Formatted::Rewritten(b) => b,
        Formatted::Dropped(_) => return entry,
    };
    if bytes.len() > PANOS_MAX_ENTRY {
        return Formatted::Dropped("longer than 255 bytes");
    }
    let is_sep = |b: &u8| matches!(b, b'.' | b'/' | b'?' | b'&' | b'=' | b';' | b'+');
    // A stored domain wildcard `*.x` is PAN-OS's own syntax for "names under x".
    let body = if original.starts_with(b"*.") && matches!(entry, Formatted::Same(_)) {
        &bytes[2..]
    } else {
        bytes
    };
    if body
        .split(is_sep)
        .any(|token| token == b"*" || token == b"^")
    {
        return Formatted::Dropped("a wildcard token (* or ^) in the value");
    }
    entry
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(v: &str) -> String {
        match apply(ViewFormat::Panos, IocType::Url, v.as_bytes()) {
            Formatted::Same(b) => String::from_utf8(b.to_vec()).unwrap(),
            Formatted::Rewritten(b) => String::from_utf8(b).unwrap(),
            Formatted::Dropped(why) => format!("DROPPED: {why}"),
        }
    }

    #[test]
    fn panos_urls_lose_scheme_and_default_port_only() {
        assert_eq!(
            url("http://evil.example.com/a/b?x=1"),
            "evil.example.com/a/b?x=1"
        );
        assert_eq!(url("https://evil.example.com:443/p"), "evil.example.com/p");
        assert_eq!(url("http://evil.example.com:80"), "evil.example.com");
        assert_eq!(
            url("http://evil.example.com:8080/"),
            "evil.example.com:8080/"
        );
        assert_eq!(url("https://evil.example.com:80/"), "evil.example.com:80/");
        assert_eq!(url("http://[2001:db8::1]:80/x"), "[2001:db8::1]/x");
        assert_eq!(url("ftp://files.example.com/x"), "files.example.com/x");
        assert_eq!(url("http://a.example.com/x:80"), "a.example.com/x:80");
    }

    #[test]
    fn panos_drops_what_it_cannot_take() {
        let long = format!("http://x.example.com/{}", "a".repeat(300));
        assert!(url(&long).starts_with("DROPPED: longer"));
        let fits = format!("http://x.example.com/{}", "a".repeat(255 - 14));
        assert_eq!(url(&fits).len(), 255);
        assert!(url("http://x.example.com/*/y").starts_with("DROPPED: a wildcard"));
        assert!(url("http://x.example.com/a?b=^").starts_with("DROPPED: a wildcard"));
        assert_eq!(url("http://x.example.com/a*b"), "x.example.com/a*b");
        assert_eq!(
            apply(ViewFormat::Panos, IocType::Domain, b"*.example.com"),
            Formatted::Same(b"*.example.com")
        );
        assert_eq!(
            apply(ViewFormat::Panos, IocType::Ipv4, b"10.0.0.0/8"),
            Formatted::Same(b"10.0.0.0/8")
        );
        assert_eq!(
            apply(ViewFormat::Plain, IocType::Url, b"http://x/*/"),
            Formatted::Same(b"http://x/*/")
        );
    }
}
