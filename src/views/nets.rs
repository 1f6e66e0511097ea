//! The addresses and networks a view selected, each with when it was last seen.
//!
//! A rebuild of a view over a million addresses spent most of its time touching fresh
//! memory: as `(Net, u32)` pairs (48 bytes each, `Net` holds a `u128`) the selection,
//! its copy for a second view and the renderer's sorted list were 130 MB of first touches.
//! IPv4 entries are packed in 12 bytes instead; IPv6 ones stay as `Net`s.

use std::cmp::Reverse;

use crate::cidr::Net;

/// An IPv4 network and when it was last seen, packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen4 {
    addr: u32,
    len: u8,
    pub seen: u32,
}

impl Seen4 {
    pub fn net(&self) -> Net {
        Net::from_v4_key(self.key())
    }

    /// The network as [`Net::v4_key`] packs it: sorts as `Net`s do.
    pub fn key(&self) -> u64 {
        u64::from(self.addr) << 6 | u64::from(self.len)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nets {
    pub v4: Vec<Seen4>,
    pub v6: Vec<(Net, u32)>,
}

impl Nets {
    pub fn push(&mut self, net: Net, seen: u32) {
        match net.is_v6() {
            false => self.v4.push(Seen4 {
                addr: net.addr() as u32,
                len: net.prefix_len(),
                seen,
            }),
            true => self.v6.push((net, seen)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room for `n` more entries of one family (a selection is of one type).
    pub fn reserve(&mut self, n: usize, v6: bool) {
        match v6 {
            false => self.v4.reserve(n),
            true => self.v6.reserve(n),
        }
    }

    /// Keep the `max` newest entries, ties by network (so the cut is the same whatever the
    /// order); returns how many went.
    pub fn keep_newest(&mut self, max: usize) -> usize {
        let before = self.len();
        if before <= max {
            return 0;
        }
        // One family, as a selection of one type is: cut it where it lies (a packed key
        // orders IPv4 networks as `Net` does).
        if self.v6.is_empty() {
            self.v4
                .select_nth_unstable_by_key(max, |e| (Reverse(e.seen), e.key()));
            self.v4.truncate(max);
        } else if self.v4.is_empty() {
            self.v6
                .select_nth_unstable_by_key(max, |&(n, seen)| (Reverse(seen), n));
            self.v6.truncate(max);
        } else {
            let mut all: Vec<(Net, u32)> = self.iter().collect();
            all.select_nth_unstable_by_key(max, |&(n, seen)| (Reverse(seen), n));
            all.truncate(max);
            *self = all.into_iter().collect();
        }
        before - max
    }

    /// Append `other`'s entries after this one's.
    pub fn append(&mut self, mut other: Nets) {
        self.v4.append(&mut other.v4);
        self.v6.append(&mut other.v6);
    }

    /// Keep the entries `keep` says yes to, IPv4 first.
    pub fn retain(&mut self, mut keep: impl FnMut(Net, u32) -> bool) {
        self.v4.retain(|e| keep(e.net(), e.seen));
        self.v6.retain(|&(n, seen)| keep(n, seen));
    }

    /// Every entry, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = (Net, u32)> + '_ {
        let v4 = self.v4.iter().map(|e| (e.net(), e.seen));
        v4.chain(self.v6.iter().copied())
    }
}

impl FromIterator<(Net, u32)> for Nets {
    fn from_iter<T: IntoIterator<Item = (Net, u32)>>(iter: T) -> Nets {
        let mut nets = Nets::default();
        for (net, seen) in iter {
            nets.push(net, seen);
        }
        nets
    }
}

impl Extend<(Net, u32)> for Nets {
    fn extend<T: IntoIterator<Item = (Net, u32)>>(&mut self, iter: T) {
        for (net, seen) in iter {
            self.push(net, seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_they_went_in_ipv4_first() {
        let nets: Vec<(Net, u32)> = vec![
            ("2001:db8::/32".parse().unwrap(), 7),
            ("10.1.2.3".parse().unwrap(), u32::MAX),
            ("0.0.0.0/0".parse().unwrap(), 0),
            ("255.255.255.255".parse().unwrap(), 1),
            ("::1".parse().unwrap(), 2),
            ("192.168.0.0/16".parse().unwrap(), 3),
        ];
        let packed: Nets = nets.iter().copied().collect();
        assert_eq!(std::mem::size_of::<Seen4>(), 12);
        assert_eq!((packed.v4.len(), packed.v6.len()), (4, 2));
        let (v4, v6): (Vec<_>, Vec<_>) = nets.iter().partition(|(n, _)| !n.is_v6());
        let want: Vec<(Net, u32)> = v4.into_iter().chain(v6).collect();
        assert_eq!(packed.iter().collect::<Vec<_>>(), want);
        let mut keys: Vec<u64> = packed.v4.iter().map(Seen4::key).collect();
        keys.sort_unstable();
        let mut by_net: Vec<Net> = packed.v4.iter().map(Seen4::net).collect();
        by_net.sort_unstable();
        assert_eq!(
            keys.into_iter().map(Net::from_v4_key).collect::<Vec<_>>(),
            by_net
        );
    }

    /// Cutting one family where it lies keeps what cutting all `(Net, u32)` pairs keeps.
    #[test]
    fn keep_newest_cuts_as_the_pairs_would() {
        let mut rng = crate::splitmix::Rng(9);
        for family in ["v4", "v6", "both"] {
            for max in [0, 1, 7, 50, 99, 100, 150] {
                let pairs: Vec<(Net, u32)> = (0..100)
                    .map(|i| {
                        let r = rng.next_u64();
                        let v6 = family == "v6" || (family == "both" && i % 3 == 0);
                        let len = if v6 { 120 + (r % 9) } else { 24 + (r % 9) } as u8;
                        // Few distinct times and addresses: many ties and duplicates.
                        let addr = u128::from((r >> 8) % 16) << 8;
                        let net = Net::new(v6, addr, len).unwrap();
                        (net, (r >> 40) as u32 % 4)
                    })
                    .collect();
                let mut want = pairs.clone();
                if want.len() > max {
                    want.select_nth_unstable_by_key(max, |&(n, s)| (Reverse(s), n));
                    want.truncate(max);
                }
                want.sort_unstable();
                let mut nets: Nets = pairs.iter().copied().collect();
                let cut = nets.keep_newest(max);
                let mut got: Vec<(Net, u32)> = nets.iter().collect();
                got.sort_unstable();
                assert_eq!(got, want, "{family} max {max}");
                assert_eq!(cut, 100usize.saturating_sub(max), "{family} max {max}");
            }
        }
    }
}
