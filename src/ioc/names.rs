//! Names: domains, URLs and email addresses (the **domain**, **url** and **email** type
//! rules in the [module documentation](super)).

use std::io::Write as _;
use std::net::Ipv6Addr;

use memchr::{memchr, memmem, memrchr};

use super::{Invalid, InvalidKind};

/// Split `s` around the separator of length `sep_len` at `i`, without panicking.
fn cut(s: &[u8], i: usize, sep_len: usize) -> (&[u8], &[u8]) {
    (
        s.get(..i).unwrap_or(s),
        s.get(i.saturating_add(sep_len)..).unwrap_or(&[]),
    )
}

/// Shorthand for a type-specific syntax error.
fn bad<T>(msg: &'static str) -> Result<T, Invalid> {
    Err(InvalidKind::Malformed(msg).into())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Domain rules; `allow_wildcard` is false inside email addresses.
pub(super) fn domain(v: &[u8], allow_wildcard: bool, out: &mut Vec<u8>) -> Result<(), Invalid> {
    if !v.is_ascii() {
        return Err(InvalidKind::NonAsciiDomain.into());
    }
    let (wildcard, body) = match v.strip_prefix(b"*.") {
        Some(rest) if allow_wildcard => (true, rest),
        _ => (false, v),
    };
    let body = body.strip_suffix(b".").unwrap_or(body);
    if body.is_empty() {
        return bad("empty domain name");
    }
    if body.len() > 253 {
        return bad("domain name longer than 253 characters");
    }
    let mut labels = 0usize;
    let mut numeric_tld = false;
    for label in body.split(|&b| b == b'.') {
        if label.is_empty() {
            return bad("empty label in domain name");
        }
        if label.len() > 63 {
            return bad("domain label longer than 63 characters");
        }
        if !label.iter().all(|&b| is_name_byte(b)) {
            return bad("domain may only contain letters, digits, '-', '_' and '.'");
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return bad("domain label starts or ends with '-'");
        }
        labels += 1;
        numeric_tld = label.iter().all(u8::is_ascii_digit);
    }
    if labels < 2 {
        return bad("domain needs at least two labels (name.tld)");
    }
    if numeric_tld {
        return bad("last label of a domain must not be all digits");
    }
    if wildcard {
        out.extend_from_slice(b"*.");
    }
    let start = out.len();
    out.extend_from_slice(body);
    out[start..].make_ascii_lowercase();
    Ok(())
}

/// Port 1..=65535, leading zeros allowed on input.
fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let start = p.iter().position(|&d| d != b'0').unwrap_or(p.len());
    let digits = p.get(start..).unwrap_or(&[]);
    if digits.len() > 5 {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().filter(|&n| n != 0)
}

pub(super) fn url(v: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    use InvalidKind::Malformed;
    let sep = memmem::find(v, b"://").ok_or(Malformed("not a URL (expected scheme://host...)"))?;
    let (scheme, rest) = cut(v, sep, 3);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return bad("invalid URL scheme");
    }
    let auth_end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, tail) = cut(rest, auth_end, 0);
    let (userinfo, hostport) = match memrchr(b'@', authority) {
        Some(i) => {
            let (user, hp) = cut(authority, i, 1);
            (Some(user), hp)
        }
        None => (None, authority),
    };

    out.extend(scheme.iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(b"://");
    if let Some(user) = userinfo {
        out.extend_from_slice(user);
        out.push(b'@');
    }
    let port = if let Some(inner) = hostport.strip_prefix(b"[") {
        let close = memchr(b']', inner).ok_or(Malformed("unterminated [IPv6] host in URL"))?;
        let (literal, after) = cut(inner, close, 1);
        let addr: Ipv6Addr = std::str::from_utf8(literal)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Malformed("invalid [IPv6] host in URL"))?;
        let _ = write!(out, "[{addr}]");
        match after {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return bad("unexpected characters after ']' in URL host"),
        }
    } else {
        let (host, port) = match memchr(b':', hostport) {
            Some(i) => {
                let (host, port) = cut(hostport, i, 1);
                (host, Some(port))
            }
            None => (hostport, None),
        };
        if host.is_empty() {
            return bad("URL has an empty host");
        }
        if !host.iter().all(|&b| is_name_byte(b) || b == b'.') {
            return bad("URL host may only contain letters, digits, '-', '_' and '.'");
        }
        out.extend(host.iter().map(u8::to_ascii_lowercase));
        port
    };
    if let Some(port) = port {
        let port =
            parse_port(port).ok_or(Malformed("URL port must be a number from 1 to 65535"))?;
        let _ = write!(out, ":{port}");
    }
    out.extend_from_slice(tail);
    Ok(())
}

pub(super) fn email(v: &[u8], out: &mut Vec<u8>) -> Result<(), Invalid> {
    use InvalidKind::Malformed;
    let at = memchr(b'@', v).ok_or(Malformed("not an email address (no '@')"))?;
    let (local, dom) = cut(v, at, 1);
    if memchr(b'@', dom).is_some() {
        return bad("email address has more than one '@'");
    }
    if local.is_empty() {
        return bad("email local part is empty");
    }
    if local.len() > 64 {
        return bad("email local part longer than 64 bytes");
    }
    if !local
        .iter()
        .all(|&b| b.is_ascii_graphic() && !b"@\"(),:;<>[]\\".contains(&b))
    {
        return bad("email local part contains a character that is not allowed");
    }
    if local.first() == Some(&b'.')
        || local.last() == Some(&b'.')
        || memmem::find(local, b"..").is_some()
    {
        return bad("email local part has a leading, trailing or double dot");
    }
    out.extend_from_slice(local);
    out.push(b'@');
    domain(dom, false, out)
}

#[cfg(test)]
mod tests {
    use crate::ioc::tests::{check_invalid, check_valid, norm};
    use crate::ioc::IocType;

    #[test]
    fn domain_table() {
        let t = IocType::Domain;
        let l63 = "a".repeat(63);
        let max = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(max.len(), 253);
        let max_dot = format!("{max}.");
        let wild_max = format!("*.{max}");
        let long_label = format!("{l63}a.com");
        let too_long = format!("{max}b");
        check_valid(
            t,
            &[
                ("evil.com", "evil.com"),
                ("Evil.COM", "evil.com"),
                ("evil.com.", "evil.com"),
                ("a.b.c.d.e.example", "a.b.c.d.e.example"),
                ("xn--bcher-kva.de", "xn--bcher-kva.de"),
                ("_dmarc.example.com", "_dmarc.example.com"),
                ("a-b.c_d.com", "a-b.c_d.com"),
                ("1.2.3.com", "1.2.3.com"),
                ("123.com4", "123.com4"),
                ("x.y", "x.y"),
                ("*.Evil.COM.", "*.evil.com"),
                ("*.evil.com", "*.evil.com"),
                (&max, &max),
                (&max_dot, &max),
                (&wild_max, &wild_max),
            ],
        );
        check_invalid(
            t,
            &[
                ("bücher.de", "use the punycode (xn--) form"),
                ("evil.cöm", "punycode"),
                ("com", "at least two labels"),
                ("localhost", "at least two labels"),
                ("*.com", "at least two labels"),
                ("*.com.", "at least two labels"),
                ("*", "may only contain"),
                ("*.", "empty domain name"),
                (".", "empty domain name"),
                ("a..b", "empty label"),
                (".evil.com", "empty label"),
                ("evil.com..", "empty label"),
                ("*.*.evil.com", "may only contain"),
                ("a.*.com", "may only contain"),
                ("**.evil.com", "may only contain"),
                ("-evil.com", "starts or ends with '-'"),
                ("evil-.com", "starts or ends with '-'"),
                ("evil.-com", "starts or ends with '-'"),
                ("evil.com-", "starts or ends with '-'"),
                ("ev!l.com", "may only contain"),
                ("evil.com:80", "may only contain"),
                ("evil.com/path", "may only contain"),
                ("evil%2ecom", "may only contain"),
                ("1.2.3.4.5", "all digits"),
                ("example.123", "all digits"),
                (&long_label, "longer than 63"),
                (&too_long, "longer than 253"),
                ("1.2.3.4", "looks like an ipv4 indicator, not domain"),
                ("http://evil.com", "looks like a url indicator, not domain"),
                ("a@evil.com", "looks like an email indicator, not domain"),
            ],
        );
    }

    #[test]
    fn url_table() {
        let t = IocType::Url;
        check_valid(
            t,
            &[
                ("HTTP://Example.COM/Path?Q=1", "http://example.com/Path?Q=1"),
                ("http://example.com", "http://example.com"),
                ("http://example.com/", "http://example.com/"),
                ("https://evil.com/a/b/", "https://evil.com/a/b/"),
                ("hxxp://evil.com/x", "hxxp://evil.com/x"),
                ("svn+SSH://Host.Example/repo", "svn+ssh://host.example/repo"),
                ("a.b-c+d://x", "a.b-c+d://x"),
                ("http://localhost:8080/x", "http://localhost:8080/x"),
                ("http://evil.com:080/", "http://evil.com:80/"),
                ("http://evil.com:65535", "http://evil.com:65535"),
                ("http://evil.com?q=A", "http://evil.com?q=A"),
                ("http://evil.com#Frag", "http://evil.com#Frag"),
                ("http://User:PaSS@Evil.com/", "http://User:PaSS@evil.com/"),
                ("http://a@b@Evil.com/", "http://a@b@evil.com/"),
                ("http://@evil.com/", "http://@evil.com/"),
                ("http://1.2.3.4/x.exe", "http://1.2.3.4/x.exe"),
                ("http://1.2.3.4:81/", "http://1.2.3.4:81/"),
                ("http://[2001:DB8::1]/x", "http://[2001:db8::1]/x"),
                (
                    "http://[::FFFF:1.2.3.4]:8443/",
                    "http://[::ffff:1.2.3.4]:8443/",
                ),
                ("http://evil.com/%20%41?x=ü", "http://evil.com/%20%41?x=ü"),
                ("http://evil.com/a@b:c", "http://evil.com/a@b:c"),
                ("ftp://evil.com/path//x", "ftp://evil.com/path//x"),
                ("http://evil.com/?", "http://evil.com/?"),
                ("http://Evil_Host.com./", "http://evil_host.com./"),
            ],
        );
        check_invalid(
            t,
            &[
                ("evil.com/path", "not a URL"),
                ("http:/evil.com", "not a URL"),
                ("://evil.com", "invalid URL scheme"),
                ("1http://evil.com", "invalid URL scheme"),
                ("ht_tp://evil.com", "invalid URL scheme"),
                ("http://", "empty host"),
                ("http:///etc/passwd", "empty host"),
                ("file:///etc/passwd", "empty host"),
                ("http://user@/x", "empty host"),
                ("http://:80/", "empty host"),
                ("http://evil.com:/", "port"),
                ("http://evil.com:0/", "port"),
                ("http://evil.com:65536/", "port"),
                ("http://evil.com:8x/", "port"),
                ("http://evil.com:80:80/", "port"),
                ("http://ev%69l.com/", "URL host may only contain"),
                ("http://bücher.de/", "URL host may only contain"),
                ("http://evil.com\\x", "URL host may only contain"),
                ("http://[2001:db8::1/", "unterminated"),
                ("http://[1.2.3.4]/", "invalid [IPv6] host"),
                ("http://[fe80::1%25eth0]/", "invalid [IPv6] host"),
                ("http://[::1]x/", "unexpected characters after ']'"),
                ("http://[::1]:0/", "port"),
                ("http://evil.com/a b", "whitespace inside"),
            ],
        );
    }

    #[test]
    fn email_table() {
        let t = IocType::Email;
        let local64 = "l".repeat(64);
        let max_local = format!("{local64}@x.com");
        let long_local = format!("{local64}l@x.com");
        check_valid(
            t,
            &[
                ("John.Doe@Example.COM", "John.Doe@example.com"),
                ("a@b.co", "a@b.co"),
                ("user+tag@evil.com.", "user+tag@evil.com"),
                ("o'brien@evil.com", "o'brien@evil.com"),
                (
                    "!#$%&'*+/=?^_`{|}~-@evil.com",
                    "!#$%&'*+/=?^_`{|}~-@evil.com",
                ),
                ("a.b.c@sub.evil.com", "a.b.c@sub.evil.com"),
                (&max_local, &max_local),
            ],
        );
        check_invalid(
            t,
            &[
                ("evil.com", "looks like a domain indicator, not email"),
                ("@evil.com", "local part is empty"),
                ("a@b@evil.com", "more than one '@'"),
                ("a@", "empty domain name"),
                ("a@com", "at least two labels"),
                ("a@*.evil.com", "may only contain"),
                ("a@1.2.3.4", "all digits"),
                ("a@[1.2.3.4]", "may only contain"),
                ("a@bücher.de", "punycode"),
                ("jöhn@evil.com", "not allowed"),
                ("\"john\"@evil.com", "not allowed"),
                ("a,b@evil.com", "not allowed"),
                ("a:b@evil.com", "not allowed"),
                ("a;b@evil.com", "not allowed"),
                ("a<b@evil.com", "not allowed"),
                ("a[b@evil.com", "not allowed"),
                ("a\\b@evil.com", "not allowed"),
                ("a(b)@evil.com", "not allowed"),
                (".a@evil.com", "leading, trailing or double dot"),
                ("a.@evil.com", "leading, trailing or double dot"),
                ("a..b@evil.com", "leading, trailing or double dot"),
                (&long_local, "longer than 64"),
            ],
        );
        // Such an address reads as a comment line.
        assert_eq!(norm(t, "#a@evil.com"), Ok(None));
    }
}
