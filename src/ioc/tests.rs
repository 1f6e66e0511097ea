use super::*;

fn lim() -> Limits {
    Limits::default()
}

pub(super) fn norm(ty: IocType, s: &str) -> Result<Option<String>, Invalid> {
    normalize(ty, s.as_bytes(), &lim())
}

/// Each valid input must normalize to the expected value.
pub(super) fn check_valid(ty: IocType, cases: &[(&str, &str)]) {
    for &(input, want) in cases {
        match norm(ty, input) {
            Ok(Some(got)) => assert_eq!(got, want, "{ty} input {input:?}"),
            other => panic!("{ty} input {input:?}: expected {want:?}, got {other:?}"),
        }
    }
}

/// Each invalid input must be rejected with a message containing the fragment.
pub(super) fn check_invalid(ty: IocType, cases: &[(&str, &str)]) {
    for &(input, fragment) in cases {
        match norm(ty, input) {
            Err(e) => assert!(
                e.to_string().contains(fragment),
                "{ty} input {input:?}: message {:?} lacks {fragment:?}",
                e.to_string()
            ),
            other => panic!("{ty} input {input:?}: expected error, got {other:?}"),
        }
    }
}

#[test]
fn type_codes_names_and_files() {
    let names = [
        "ipv4", "ipv6", "domain", "url", "email", "md5", "sha1", "sha256", "sha512",
    ];
    for (i, ty) in IocType::ALL.into_iter().enumerate() {
        assert_eq!(usize::from(ty.code()), i);
        assert_eq!(IocType::from_code(ty.code()), Some(ty));
        assert_eq!(ty.name(), names[i]);
        assert_eq!(ty.to_string(), names[i]);
        assert_eq!(ty.file_name(), format!("{}.txt", names[i]));
        assert_eq!(IocType::from_name(ty.name()), Some(ty));
        assert_eq!(IocType::from_file_name(ty.file_name()), Some(ty));
    }
    assert_eq!(IocType::from_code(9), None);
    assert_eq!(IocType::from_code(255), None);
    for bad in ["", "IPV4", "ipv4 ", "ipv4.TXT", "ipv4.txt.bak", "sha3"] {
        assert_eq!(IocType::from_name(bad), None, "{bad:?}");
        assert_eq!(IocType::from_file_name(bad), None, "{bad:?}");
    }
    assert_eq!(IocType::from_file_name("ipv4"), None);
    assert_eq!(IocType::from_name("ipv4.txt"), None);
    let mut sorted = IocType::ALL;
    sorted.sort();
    assert_eq!(sorted, IocType::ALL, "Ord follows code order");
}

#[test]
fn default_limits() {
    assert_eq!(
        Limits::default(),
        Limits {
            min_prefix_v4: 8,
            min_prefix_v6: 16
        }
    );
}

#[test]
fn line_rules_skip() {
    for ty in IocType::ALL {
        for line in [
            "",
            "\r",
            " ",
            "\t \t",
            " \r",
            "\u{a0}\u{2003}",
            "\u{feff}",
            "\u{feff}# a list saved by Notepad",
            "#",
            "# comment",
            "  # indented comment",
            ";",
            "; comment",
            "//",
            "// comment",
            "\t//x",
            "#1.2.3.4",
            ";evil.com",
            "//evil.com",
        ] {
            assert_eq!(norm(ty, line), Ok(None), "{ty} {line:?}");
            let mut out = b"keep".to_vec();
            assert_eq!(
                normalize_into(ty, line.as_bytes(), &lim(), &mut out),
                Ok(Line::Skip)
            );
            assert_eq!(out, b"keep");
        }
    }
}

#[test]
fn line_rules_trim_and_comments() {
    let d = IocType::Domain;
    check_valid(
        d,
        &[
            ("evil.com\r", "evil.com"),
            ("evil.com \r", "evil.com"),
            ("  evil.com\t", "evil.com"),
            ("\u{a0}evil.com\u{2003}", "evil.com"),
            ("\u{feff}evil.com", "evil.com"),
            ("\u{feff} evil.com # BOM, then a comment", "evil.com"),
            ("evil.com # from feed X", "evil.com"),
            ("evil.com\t#x", "evil.com"),
            ("evil.com ; note", "evil.com"),
            ("evil.com // note", "evil.com"),
            ("evil.com   #", "evil.com"),
            ("evil.com #a # b", "evil.com"),
            ("evil.com\u{a0}# nbsp before marker", "evil.com"),
            ("evil.com # comment with \u{1} control", "evil.com"),
        ],
    );
    check_valid(
        IocType::Ipv4,
        &[
            ("1.2.3.0/24 ; SBL123", "1.2.3.0/24"),
            ("1.2.3.4\r", "1.2.3.4"),
        ],
    );
    check_valid(
        IocType::Url,
        &[
            ("http://a.com/x#frag # note", "http://a.com/x#frag"),
            ("http://a.com/;x // note", "http://a.com/;x"),
        ],
    );
    // Only one '\r' is stripped by rule 1; further ones are whitespace and trimmed.
    check_valid(
        d,
        &[("evil.com\r\r", "evil.com"), ("evil.com\r\r\r", "evil.com")],
    );
    // Markers not preceded by whitespace are part of the value.
    check_invalid(
        d,
        &[
            ("evil.com#x", "may only contain"),
            ("evil.com;x", "may only contain"),
            ("evil.com//x", "may only contain"),
        ],
    );
    // A single '/' after whitespace is not a comment.
    check_invalid(d, &[("evil.com /x", "whitespace inside")]);
}

#[test]
fn line_rules_rejections() {
    let d = IocType::Domain;
    check_invalid(
        d,
        &[
            ("evil .com", "contains whitespace inside the value"),
            ("evil\t.com", "contains whitespace inside the value"),
            ("evil\u{a0}.com", "contains whitespace inside the value"),
            ("evil\r.com", "contains whitespace inside the value"),
            ("a.com b.com", "contains whitespace inside the value"),
            ("evil\u{1}.com", "contains a control character"),
            ("evil.com\u{7f}", "contains a control character"),
            ("\u{1b}[31mevil.com", "contains a control character"),
            ("evil\u{85}.com", "whitespace"), // NEL is Unicode whitespace
            ("evil\u{9f}.com", "contains a control character"),
            ("evil\0.com", "contains a NUL byte"),
            ("# comment\0", "contains a NUL byte"),
            (
                "evil\u{200b}.com",
                "invisible formatting character (U+200B)",
            ),
        ],
    );
    check_invalid(
        IocType::Url,
        &[
            (
                "http://e.com/invoice\u{202e}fdp.exe",
                "invisible formatting character (U+202E)",
            ),
            ("http://e.com/?q=\u{2066}x\u{2069}", "(U+2066)"),
            ("http://e.com/a\u{feff}b", "(U+FEFF)"),
            ("http://e.com/a\u{ad}b", "(U+00AD)"),
            ("http://e.com/\u{200f}", "(U+200F)"),
        ],
    );
    // Joiners are part of some scripts' spelling.
    assert!(normalize(
        IocType::Url,
        "http://e.com/\u{645}\u{200c}\u{627}".as_bytes(),
        &lim()
    )
    .is_ok());
    for ty in IocType::ALL {
        for raw in [
            &b"\xff"[..],
            b"evil\xc3.com",
            b"# \xfe comment",
            b"\xed\xa0\x80",
        ] {
            let e = normalize(ty, raw, &lim()).unwrap_err();
            assert_eq!(e.to_string(), "invalid UTF-8");
            assert_eq!(e.kind(), &InvalidKind::Utf8);
        }
    }
}

#[test]
fn line_length_limit() {
    let prefix = "http://a.com/";
    let exact = format!("{prefix}{}", "p".repeat(MAX_LINE_LEN - prefix.len()));
    assert_eq!(exact.len(), MAX_LINE_LEN);
    assert_eq!(norm(IocType::Url, &exact), Ok(Some(exact.clone())));
    assert_eq!(
        norm(IocType::Url, &format!("{exact}\r")),
        Ok(Some(exact.clone()))
    );
    let long = format!("{exact}p");
    let e = norm(IocType::Url, &long).unwrap_err();
    assert_eq!(e.to_string(), "line longer than 4096 bytes");
    assert_eq!(e.kind(), &InvalidKind::TooLong);
    // Length is checked before trimming and comment removal.
    let padded = format!("{}evil.com", " ".repeat(MAX_LINE_LEN));
    assert_eq!(
        norm(IocType::Domain, &padded).unwrap_err().kind(),
        &InvalidKind::TooLong
    );
    let comment = format!("#{}", "x".repeat(MAX_LINE_LEN));
    assert_eq!(
        norm(IocType::Domain, &comment).unwrap_err().kind(),
        &InvalidKind::TooLong
    );
}

#[test]
fn wrong_type_per_file() {
    let cases: &[(IocType, &str, IocType)] = &[
        (IocType::Ipv4, "evil.com", IocType::Domain),
        (IocType::Ipv4, "2001:db8::1", IocType::Ipv6),
        (IocType::Ipv4, "http://1.2.3.4/", IocType::Url),
        (
            IocType::Ipv4,
            "d41d8cd98f00b204e9800998ecf8427e",
            IocType::Md5,
        ),
        (IocType::Ipv6, "1.2.3.4", IocType::Ipv4),
        (IocType::Domain, "1.2.3.4", IocType::Ipv4),
        (IocType::Domain, "::1", IocType::Ipv6),
        (IocType::Url, "evil.com", IocType::Domain),
        (IocType::Url, "a@evil.com", IocType::Email),
        (IocType::Email, "http://a@evil.com/", IocType::Url),
        (IocType::Md5, "1.2.3.4", IocType::Ipv4),
    ];
    for &(ty, input, found) in cases {
        let e = norm(ty, input).unwrap_err();
        assert_eq!(
            e.kind(),
            &InvalidKind::WrongType {
                expected: ty,
                found
            },
            "{ty} {input:?}"
        );
    }
    assert_eq!(
        norm(IocType::Ipv4, "evil.com").unwrap_err().to_string(),
        "looks like a domain indicator, not ipv4"
    );
    assert_eq!(
        norm(IocType::Ipv4, "::1").unwrap_err().to_string(),
        "looks like an ipv6 indicator, not ipv4"
    );
    // Nothing recognisable: keep the type's own message.
    assert_eq!(
        norm(IocType::Ipv4, "nonsense").unwrap_err().to_string(),
        "not an IPv4 address or network"
    );
}

#[test]
fn normalize_into_appends_or_leaves_out_alone() {
    let l = lim();
    let mut out = b"prev\n".to_vec();
    assert_eq!(
        normalize_into(IocType::Ipv4, b"1.2.3.4/24", &l, &mut out),
        Ok(Line::Value)
    );
    assert_eq!(out, b"prev\n1.2.3.0/24");
    out.push(b'\n');
    assert_eq!(
        normalize_into(IocType::Domain, b"Evil.COM # x\r", &l, &mut out),
        Ok(Line::Value)
    );
    assert_eq!(out, b"prev\n1.2.3.0/24\nevil.com");

    let before = out.clone();
    let failing: &[(IocType, &[u8])] = &[
        (IocType::Ipv4, b"1.2.3.4/4"),
        (IocType::Ipv4, b"evil.com"),
        (IocType::Ipv6, b"1.2.3.4"),
        (IocType::Domain, b"evil..com"),
        (IocType::Domain, b"bad\xff"),
        (IocType::Url, b"http://evil.com:99999/"),
        (IocType::Url, b"http://[::1"),
        (IocType::Url, b"HTTP://EVIL.COM:0/"),
        (IocType::Email, b"USER@EVIL..COM"),
        (IocType::Email, b"user@evil.com@x"),
        (IocType::Sha1, b"d41d8cd98f00b204e9800998ecf8427e"),
        (IocType::Md5, b"a b"),
        (IocType::Md5, b"a\0b"),
    ];
    for &(ty, raw) in failing {
        assert!(
            normalize_into(ty, raw, &l, &mut out).is_err(),
            "{ty} {raw:?}"
        );
        assert_eq!(out, before, "{ty} {raw:?} modified out");
    }
    assert_eq!(
        normalize_into(IocType::Url, b"# c", &l, &mut out),
        Ok(Line::Skip)
    );
    assert_eq!(out, before);
}

#[test]
fn classify_table() {
    let l = lim();
    let cases: &[(&str, Option<(IocType, &str)>)] = &[
        ("1.2.3.4", Some((IocType::Ipv4, "1.2.3.4"))),
        ("1.2.3.4/24", Some((IocType::Ipv4, "1.2.3.0/24"))),
        ("1.2.3.4/32", Some((IocType::Ipv4, "1.2.3.4"))),
        ("1.2.3.4/4", None),
        ("2001:DB8::1", Some((IocType::Ipv6, "2001:db8::1"))),
        ("::ffff:1.2.3.4", Some((IocType::Ipv6, "::ffff:1.2.3.4"))),
        ("2001:db8::/32", Some((IocType::Ipv6, "2001:db8::/32"))),
        (
            "D41D8CD98F00B204E9800998ECF8427E",
            Some((IocType::Md5, "d41d8cd98f00b204e9800998ecf8427e")),
        ),
        (
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            Some((IocType::Sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709")),
        ),
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            Some((
                IocType::Sha256,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )),
        ),
        ("abcdef", None),
        (
            "HTTP://Evil.com/X",
            Some((IocType::Url, "http://evil.com/X")),
        ),
        (
            "http://a@evil.com",
            Some((IocType::Url, "http://a@evil.com")),
        ),
        ("John@Evil.COM", Some((IocType::Email, "John@evil.com"))),
        ("Evil.COM.", Some((IocType::Domain, "evil.com"))),
        ("*.Evil.com", Some((IocType::Domain, "*.evil.com"))),
        ("deadbeef.com", Some((IocType::Domain, "deadbeef.com"))),
        ("  evil.com  # note\r", Some((IocType::Domain, "evil.com"))),
        ("evil", None),
        ("*.com", None),
        ("1.2.3.4.5", None),
        ("", None),
        ("   ", None),
        ("# evil.com", None),
        ("; evil.com", None),
        ("// evil.com", None),
        ("evil .com", None),
        ("evil\0.com", None),
    ];
    for &(input, want) in cases {
        let got = classify(input.as_bytes(), &l);
        let want = want.map(|(t, s)| (t, s.to_string()));
        assert_eq!(got, want, "{input:?}");
    }
    assert_eq!(classify(b"\xffevil.com", &l), None);
    let loose = Limits {
        min_prefix_v4: 0,
        min_prefix_v6: 0,
    };
    assert_eq!(
        classify(b"1.2.3.4/4", &loose),
        Some((IocType::Ipv4, "0.0.0.0/4".to_string()))
    );
    assert_eq!(
        classify(b"::/0", &loose),
        Some((IocType::Ipv6, "::/0".to_string()))
    );
}

#[test]
fn escape_excerpt_cases() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"", 10, ""),
        (b"", 0, ""),
        (b"abc", 3, "abc"),
        (b"abc", 10, "abc"),
        (b"abcd", 3, "..."),
        (b"abcdef", 5, "ab..."),
        (b"abcdef", 6, "abcdef"),
        (b"abcdefg", 6, "abc..."),
        (b"a\\b", 10, "a\\\\b"),
        (
            b"a\0b\n\r\t\x7f\xff",
            100,
            "a\\x00b\\x0a\\x0d\\x09\\x7f\\xff",
        ),
        ("é".as_bytes(), 100, "\\xc3\\xa9"),
        (b"ab\xffcdef", 8, "ab..."), // "\xff" does not fit before "...": not split
        (b"ab\xffcdef", 9, "ab\\xff..."),
        (b"\\\\\\", 4, "..."),
        (b"\\\\\\", 5, "\\\\..."),
        (b"abcdef", 2, ".."),
        (b"abcdef", 0, ""),
        (b"ab", 2, "ab"),
        (b"a\"b' ", 10, "a\"b' "),
    ];
    for &(raw, max, want) in cases {
        let got = escape_excerpt(raw, max);
        assert_eq!(got, want, "{raw:?} max {max}");
        assert!(got.len() <= max, "{raw:?} max {max}: {got:?}");
    }
    let long = vec![0u8; 100_000];
    let e = escape_excerpt(&long, 80);
    assert!(e.len() <= 80 && e.ends_with("..."));
    assert_eq!(e, format!("{}...", "\\x00".repeat(19)));
}

#[test]
fn invalid_messages() {
    let cases: &[(InvalidKind, &str)] = &[
        (InvalidKind::TooLong, "line longer than 4096 bytes"),
        (InvalidKind::Nul, "contains a NUL byte"),
        (InvalidKind::Utf8, "invalid UTF-8"),
        (InvalidKind::Control, "contains a control character"),
        (
            InvalidKind::InvisibleFormat('\u{202E}'),
            "contains an invisible formatting character (U+202E): the value would not show \
             what it matches",
        ),
        (
            InvalidKind::Whitespace,
            "contains whitespace inside the value",
        ),
        (
            InvalidKind::WrongType {
                expected: IocType::Ipv4,
                found: IocType::Ipv6,
            },
            "looks like an ipv6 indicator, not ipv4",
        ),
        (
            InvalidKind::WrongType {
                expected: IocType::Ipv4,
                found: IocType::Domain,
            },
            "looks like a domain indicator, not ipv4",
        ),
        (
            InvalidKind::TooBroad { min_prefix: 8 },
            "network broader than /8",
        ),
        (
            InvalidKind::NonAsciiDomain,
            "non-ASCII domain: use the punycode (xn--) form",
        ),
        (
            InvalidKind::HashLength {
                ty: IocType::Sha256,
                got: 63,
            },
            "expected 64 hex digits for sha256, got 63",
        ),
        (
            InvalidKind::NotHex { ty: IocType::Md5 },
            "not an md5 hash: contains a non-hex character",
        ),
        (InvalidKind::Malformed("x y"), "x y"),
    ];
    for (kind, msg) in cases {
        let e = Invalid::from(kind.clone());
        assert_eq!(e.to_string(), *msg);
        assert_eq!(e.kind(), kind);
        let _: &dyn std::error::Error = &e;
    }
}

#[test]
fn every_rejection_has_a_reason_name_for_the_counters() {
    let long = "a".repeat(MAX_LINE_LEN + 1);
    let not_hex = "g".repeat(32);
    let cases: &[(IocType, &[u8], &str)] = &[
        (IocType::Domain, long.as_bytes(), "too_long"),
        (IocType::Domain, b"a\0b.com", "nul"),
        (IocType::Domain, b"a\xffb.com", "utf8"),
        (IocType::Domain, b"a\x01b.com", "control"),
        (
            IocType::Url,
            "http://a.com/\u{202e}x".as_bytes(),
            "invisible_format",
        ),
        (IocType::Domain, b"evil .com", "whitespace"),
        (IocType::Ipv4, b"evil.example.com", "wrong_type"),
        (IocType::Ipv4, b"1.0.0.0/4", "too_broad"),
        (
            IocType::Domain,
            "ex\u{e4}mple.com".as_bytes(),
            "non_ascii_domain",
        ),
        (IocType::Md5, b"abcdef", "hash_length"),
        (IocType::Md5, not_hex.as_bytes(), "not_hex"),
        (IocType::Ipv4, b"1.2.3", "malformed"),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for &(ty, input, want) in cases {
        let why = normalize(ty, input, &lim()).expect_err(want);
        assert_eq!(REASONS[why.kind().reason()], want, "{ty} {input:?}: {why}");
        seen.insert(want);
    }
    assert_eq!(seen.len(), REASONS.len(), "every reason is reachable");
}
