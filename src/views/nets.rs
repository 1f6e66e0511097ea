//! The addresses and networks a view selected, each with when it was last seen.
//!
//! A rebuild of a view over a million addresses spent most of its time touching fresh
//! memory: as `(Net, u32)` pairs (48 bytes each, `Net` holds a `u128`) the selection,
//! its copy for a second view and the renderer's sorted list were 130 MB of first touches.
//! IPv4 entries are packed in 12 bytes instead; IPv6 ones stay as `Net`s.

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
    pub fn with_capacity(n: usize) -> Nets {
        Nets {
            v4: Vec::with_capacity(n),
            v6: Vec::new(),
        }
    }

    pub fn push(&mut self, net: Net, seen: u32) {
        match net.v4_key() {
            Some(key) => self.v4.push(Seen4 {
                addr: (key >> 6) as u32,
                len: (key & 63) as u8,
                seen,
            }),
            None => self.v6.push((net, seen)),
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room for `n` more IPv4 entries (most selections are one family).
    pub fn reserve(&mut self, n: usize) {
        self.v4.reserve(n);
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
}
