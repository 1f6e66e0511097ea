//! The hostile-input corpus of mount_hostile_input.rs: malformed lines, input the docs say
//! is accepted, one sample per type, and real tools writing bad lines.

// Fragments of the reasons the daemon gives (src/ioc/mod.rs).
pub const NUL: &str = "NUL";
pub const UTF8: &str = "invalid UTF-8";
pub const LONG: &str = "longer than 4096";
pub const CTRL: &str = "control character";
pub const WS: &str = "whitespace inside";
pub const CHARS: &str = "may only contain";
pub const LOCAL: &str = "local part";
pub const INVISIBLE: &str = "invisible formatting character";

/// At most this many rejections are logged per daemon and minute (src/ingest.rs), so the
/// corpus runs in groups with a restart in between, each under the budget.
pub const LOG_BUDGET: u64 = 100;

/// Malformed lines (README: NUL, invalid UTF-8, more than 4096 bytes, control characters
/// and whitespace inside a value are rejected): (what, file, line, reason).
#[rustfmt::skip]
pub const MALFORMED: &[(&str, &str, &[u8], &str)] = &[
    ("NUL inside", "domain.txt", b"evil\0.example.com", NUL),
    ("NUL first", "ipv4.txt", b"\x00203.0.113.9", NUL),
    ("NUL alone", "sha1.txt", b"\0", NUL),
    ("lone 0xff", "url.txt", b"http://evil.example.com/\xff", UTF8),
    ("overlong '/'", "url.txt", b"http://evil.example.com/\xc0\xaf", UTF8),
    ("UTF-16 surrogate", "url.txt", b"http://e.example.com/\xed\xa0\x80", UTF8),
    ("truncated sequence", "domain.txt", b"evil.example.com\xe2\x82", UTF8),
    ("Latin-1", "email.txt", b"caf\xe9@example.com", UTF8),
    ("4097-byte line", "url.txt", &[b'x'; 4097], LONG),
    ("SOH", "domain.txt", b"evil\x01.example.com", CTRL),
    ("ESC clear screen", "url.txt", b"http://evil.example.com/\x1b[2J\x1b[H", CTRL),
    ("ESC colours", "domain.txt", b"\x1b[31mevil.example.com\x1b[0m", CTRL),
    ("DEL", "url.txt", b"http://evil.example.com/a\x7f", CTRL),
    ("backspace", "md5.txt", b"d41d8cd98f00b204\x08e9800998ecf8427e", CTRL),
    ("C1 CSI", "url.txt", "http://evil.example.com/\u{9b}31m".as_bytes(), CTRL),
    ("CR inside", "url.txt", b"http://evil.example.com/a\rb", WS),
    ("CR as separator", "ipv4.txt", b"203.0.113.1\r203.0.113.2", WS),
    ("tab inside", "domain.txt", b"evil\t.example.com", WS),
    ("space inside", "domain.txt", b"evil example.com", WS),
    ("two addresses", "ipv4.txt", b"203.0.113.1 203.0.113.2", WS),
    ("space in email", "email.txt", b"a b@example.com", WS),
    ("space in URL", "url.txt", b"http://evil.example.com/a b", WS),
    ("NBSP inside", "domain.txt", "evil\u{a0}example.com".as_bytes(), WS),
    ("vertical tab", "ipv4.txt", b"203.0.113.1\x0b5", WS),
    ("zero-width space", "domain.txt", "evil\u{200b}.example.com".as_bytes(), INVISIBLE),
    ("right-to-left override in a URL", "url.txt",
        "http://evil.example.com/invoice\u{202e}fdp.exe".as_bytes(), INVISIBLE),
    ("bidi isolate in a URL", "url.txt", "http://evil.example.com/?q=\u{2067}x".as_bytes(), INVISIBLE),
    ("BOM inside a URL", "url.txt", "http://evil.example.com/a\u{feff}b".as_bytes(), INVISIBLE),
    ("Cyrillic homoglyph", "domain.txt", "\u{435}vil.example.com".as_bytes(), "ASCII"),
    ("the whole IPv4 space", "ipv4.txt", b"0.0.0.0/0", "broader than /8"),
    ("the whole IPv6 space", "ipv6.txt", b"::/0", "broader than /16"),
    // Shell metacharacters are data, never run, and invalid wherever the type forbids them.
    ("$(...)", "domain.txt", b"$(rm -rf /)", WS),
    ("$(...) in a hash", "sha256.txt", b"$(cat${IFS}/etc/shadow)", "non-hex"),
    ("backticks", "domain.txt", b"`reboot`.example.com", CHARS),
    ("; after a domain", "domain.txt", b"evil.example.com;reboot", CHARS),
    ("; then a space", "domain.txt", b"evil.example.com; rm -rf /", WS),
    ("pipe", "domain.txt", b"evil.example.com|nc", CHARS),
    ("&&", "domain.txt", b"evil.example.com&&reboot", CHARS),
    ("redirect", "ipv4.txt", b"203.0.113.1>/etc/passwd", ""),
    ("$(...) in a URL host", "url.txt", b"http://evil$(id).example.com/", "URL host"),
    ("$(...) in an email", "email.txt", b"x$(id)@evil.example.com", LOCAL),
    ("; in an email", "email.txt", b"x;y@evil.example.com", LOCAL),
    ("> in an email", "email.txt", b"x>y@evil.example.com", LOCAL),
];

/// Accepted as documented: `\r\n`, blank, whitespace-only and comment lines, surrounding
/// whitespace (ASCII and Unicode), trailing comments, metacharacters where the type allows
/// them: (what, file, written, lines appended).
#[rustfmt::skip]
pub const ACCEPTED: &[(&str, &str, &[u8], &[&str])] = &[
    ("CRLF", "ipv4.txt", b"203.0.113.10\r\n", &["203.0.113.10"]),
    ("CRLF, normalized", "domain.txt", b"a.example.com\r\nB.Example.COM.\r\n",
        &["a.example.com", "b.example.com"]),
    ("a line that is only CR", "domain.txt", b"\r\n", &[]),
    ("CR lines", "md5.txt", b"\r\n\r\n\r\r\n", &[]),
    ("empty lines", "sha1.txt", b"\n\n\n", &[]),
    ("1 MiB of empty lines", "sha1.txt", &[b'\n'; 1 << 20], &[]),
    ("whitespace-only lines", "url.txt", b" \t \n\x0c\n", &[]),
    ("surrounding whitespace", "domain.txt", b"  \tTrim.Example.COM \t \n", &["trim.example.com"]),
    ("Unicode whitespace", "ipv4.txt", "\u{a0}203.0.113.11\u{3000}\n".as_bytes(), &["203.0.113.11"]),
    // Lists saved by Windows tools start with one (and `cat a b` puts one mid-stream).
    ("byte-order marks", "ipv4.txt", "\u{feff}203.0.113.9\n\u{feff}203.0.113.8\n".as_bytes(),
        &["203.0.113.9", "203.0.113.8"]),
    ("comment lines", "sha256.txt", b"# $(rm -rf /)\n; `reboot`\n// | > <\n", &[]),
    ("trailing comment", "ipv4.txt", b"203.0.113.12 ; $(rm -rf /)\n", &["203.0.113.12"]),
    ("metacharacters in a URL path", "url.txt", b"http://evil.example.com/$(id)`id`;a|b>c&d\n",
        &["http://evil.example.com/$(id)`id`;a|b>c&d"]),
    ("metacharacters in an email", "email.txt", b"a|b`c`@Evil.Example.COM\n",
        &["a|b`c`@evil.example.com"]),
];

/// One well-formed sample of each type, for the wrong-file matrix.
#[rustfmt::skip]
pub const SAMPLES: [(&str, &str); 9] = [
    ("ipv4.txt", "203.0.113.7"),
    ("ipv6.txt", "2001:DB8::BAD"),
    ("domain.txt", "Evil.Example.COM"),
    ("url.txt", "http://evil.example.com/x"),
    ("email.txt", "bad@evil.example.com"),
    ("md5.txt", "d41d8cd98f00b204e9800998ecf8427e"),
    ("sha1.txt", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("sha256.txt", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("sha512.txt", "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                    47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"),
];

/// Real tools: (what, command run in the mount, file, the bad line, whether the tool
/// names the errno: coreutils do, dash's builtins say "I/O error"). dash's printf turns
/// `\001` into the byte.
#[rustfmt::skip]
pub const SHELL: &[(&str, &str, &str, Bad, bool)] = &[
    ("printf >>", "printf '203.0.113.20\\n\\001\\n' >> live/ipv4.txt", "ipv4.txt",
        (2, b"\x01", CTRL), false),
    ("printf >>, ESC", "printf 'x.example.com\\n\\033[2J\\n' >> live/domain.txt", "domain.txt",
        (2, b"\x1b[2J", CTRL), false),
    ("> redirect", "printf 'http://x.example.com/\\n\\377\\n' > live/url.txt", "url.txt",
        (2, b"\xff", UTF8), false),
    ("coreutils printf >>", "/usr/bin/printf 'a b@example.com\\n' >> live/email.txt", "email.txt",
        (1, b"a b@example.com", WS), true),
    ("coreutils printf >>, NUL", "/usr/bin/printf '\\000\\n' >> live/ipv4.txt", "ipv4.txt",
        (1, b"\0", NUL), true),
    ("tee -a", "printf 'evil.example.com\\n' | tee -a live/md5.txt", "md5.txt",
        (1, b"evil.example.com", "domain indicator, not md5"), true),
    ("cp", "printf 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\\nnot-a-hash\\n' \
        > ../cp.txt && cp ../cp.txt live/sha256.txt", "sha256.txt", (2, b"not-a-hash", ""), true),
];

/// A bad line: its number within the write, its raw bytes and a fragment of the reason.
pub type Bad<'a> = (u64, &'a [u8], &'a str);
