//! Which tier file a reader walking the tiers opens next. Tools that read many files
//! (`grep -r`, `tar`, `cp -r`, `rsync`, a shell glob) open them one after another, in
//! directory order or by name; when an open of a tier file follows the file opened before
//! it in one of those orders, the files after it in that order are worth inflating now,
//! while the reader reads this one (`Store::inflate_ahead`). Opens by any process count:
//! a shell loop runs one process per file.

use std::sync::{Mutex, OnceLock};

use crate::ioc::IocType;
use crate::store::model::Tier;

pub type TierFile = (Tier, IocType);

/// Files (with anything in them) inflated ahead of a walking reader: with one, the reader
/// still waits for every inflate after it has read the file before; two keep the cores busy.
pub const FILES_AHEAD: usize = 2;

/// The orders tools walk the tier files in: directory order (the tiers as the root lists
/// them, the types as each tier directory does), then by name (globs, `rsync`, `ls`).
fn orders() -> &'static [Vec<TierFile>; 2] {
    static ORDERS: OnceLock<[Vec<TierFile>; 2]> = OnceLock::new();
    ORDERS.get_or_init(|| {
        let walk = |tiers: &[Tier], types: &[IocType]| -> Vec<TierFile> {
            tiers
                .iter()
                .flat_map(|&t| types.iter().map(move |&ty| (t, ty)))
                .collect()
        };
        let (mut tiers, mut types) = (Tier::ALL, IocType::ALL);
        tiers.sort_by_key(|t| t.name());
        types.sort_by_key(|ty| ty.file_name());
        [walk(&Tier::ALL, &IocType::ALL), walk(&tiers, &types)]
    })
}

#[derive(Default)]
pub struct TierWalk {
    last: Mutex<Option<TierFile>>,
}

impl TierWalk {
    /// Note an open of `file`; when it follows the file opened before it in one of the
    /// orders, the files after it in that order (else none).
    pub fn opened(&self, file: TierFile) -> &'static [TierFile] {
        let Some(prev) = crate::sync::lock(&self.last).replace(file) else {
            return &[];
        };
        for order in orders() {
            let at = |f: TierFile| order.iter().position(|&o| o == f);
            if let (Some(p), Some(c)) = (at(prev), at(file)) {
                if c == p + 1 {
                    return &order[c + 1..];
                }
            }
        }
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IocType::*;
    use Tier::*;

    #[test]
    fn a_walk_in_directory_order_or_by_name_is_followed_and_nothing_else() {
        let walk = TierWalk::default();
        assert!(walk.opened((Chaud, Url)).is_empty(), "one open is no walk");
        // Directory order: url, then email.
        assert_eq!(walk.opened((Chaud, Email))[0], (Chaud, Md5));
        // The last type of a tier leads to the next tier's first.
        walk.opened((Chaud, Sha256));
        assert_eq!(
            walk.opened((Chaud, Sha512))[..2],
            [(Tiede, Ipv4), (Tiede, Ipv6)]
        );
        assert!(walk.opened((Froid, Sha512)).is_empty(), "a jump");
        assert!(
            walk.opened((Froid, Sha512)).is_empty(),
            "the same file again"
        );
        // By name: domain.txt, email.txt, ipv4.txt, ...; chaud, froid, tiede.
        walk.opened((Tiede, Domain));
        assert_eq!(walk.opened((Tiede, Email))[0], (Tiede, Ipv4));
        walk.opened((Chaud, Sha512));
        assert_eq!(walk.opened((Chaud, Url))[0], (Froid, Domain));
        // The last file of a walk has nothing after it.
        walk.opened((Froid, Sha256));
        assert!(walk.opened((Froid, Sha512)).is_empty());
    }
}
