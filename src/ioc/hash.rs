//! Hex hashes: the **md5 / sha1 / sha256 / sha512** type rules in the
//! [module documentation](super).

use super::{Invalid, InvalidKind, IocType};

pub(super) fn hash(ty: IocType, v: &str, out: &mut Vec<u8>) -> Result<(), Invalid> {
    if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidKind::NotHex { ty }.into());
    }
    if Some(v.len()) != ty.hex_len() {
        return Err(InvalidKind::HashLength { ty, got: v.len() }.into());
    }
    out.extend(v.bytes().map(|b| b.to_ascii_lowercase()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ioc::tests::{check_invalid, check_valid};
    use crate::ioc::IocType;

    #[test]
    fn hash_table() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        let sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sha512 = format!("{sha256}{sha256}");
        for (ty, h) in [
            (IocType::Md5, md5),
            (IocType::Sha1, sha1),
            (IocType::Sha256, sha256),
            (IocType::Sha512, sha512.as_str()),
        ] {
            let upper = h.to_ascii_uppercase();
            let crlf = format!("{upper}\r");
            let commented = format!("  {h}  # sample");
            check_valid(ty, &[(h, h), (&upper, h), (&crlf, h), (&commented, h)]);
            let n = h.len();
            let short = &h[..n - 1];
            let long = format!("{h}0");
            let nonhex = format!("{}g", &h[..n - 1]);
            let short_msg = format!("expected {n} hex digits for {ty}, got {}", n - 1);
            let long_msg = format!("expected {n} hex digits for {ty}, got {}", n + 1);
            check_invalid(
                ty,
                &[
                    (short, &short_msg),
                    (&long, &long_msg),
                    (&nonhex, "contains a non-hex character"),
                    ("abc", "got 3"),
                    ("0x1234", "non-hex"),
                ],
            );
        }
        // A hash in the wrong hash file names the right one.
        check_invalid(
            IocType::Sha256,
            &[(md5, "looks like an md5 indicator, not sha256")],
        );
        check_invalid(
            IocType::Md5,
            &[(sha1, "looks like a sha1 indicator, not md5")],
        );
        check_invalid(
            IocType::Sha1,
            &[("evil.com", "looks like a domain indicator, not sha1")],
        );
    }
}
