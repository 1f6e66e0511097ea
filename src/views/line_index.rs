//! A sparse index of a sorted file's lines, for a binary search that reads at most one
//! block of the file (`views::lookup`'s answer to "is this value in that view").

use crate::error::Result;

/// Every [`BLOCK`] bytes of a sorted file, the first line that starts there: a binary
/// search over these in memory, then one read of at most a block and a line, answers
/// whether a line is in the file. About 40 bytes per 4 KiB of file.
#[derive(Debug)]
pub struct LineIndex {
    /// Offsets of the lines, ascending; the first is 0.
    starts: Vec<u64>,
    firsts: Vec<Box<[u8]>>,
}

/// Bytes of file per index entry.
const BLOCK: u64 = 4096;

impl LineIndex {
    /// Index a file of `len` bytes, read through `read_at(offset, size)`.
    pub fn build(len: u64, read_at: impl Fn(u64, usize) -> Result<Vec<u8>>) -> Result<LineIndex> {
        const CHUNK: usize = 1 << 20;
        let mut index = LineIndex {
            starts: Vec::new(),
            firsts: Vec::new(),
        };
        // The next line starting at or after `due` is recorded.
        let mut due = 0u64;
        let mut line_start = 0u64;
        let mut line: Vec<u8> = Vec::new();
        let mut at = 0u64;
        while at < len {
            let chunk = read_at(at, CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            let mut rest = &chunk[..];
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                if line_start >= due {
                    line.extend_from_slice(&rest[..nl]);
                    index.starts.push(line_start);
                    index
                        .firsts
                        .push(std::mem::take(&mut line).into_boxed_slice());
                    due = (line_start / BLOCK + 1) * BLOCK;
                }
                line.clear();
                line_start = at + (chunk.len() - rest.len() + nl + 1) as u64;
                rest = &rest[nl + 1..];
            }
            if line_start >= due {
                line.extend_from_slice(rest);
            }
            at += chunk.len() as u64;
        }
        if line_start >= due && line_start < len {
            index.starts.push(line_start);
            index.firsts.push(line.into_boxed_slice());
        }
        Ok(index)
    }

    /// The bytes `start..end` of the block where `needle` would be, in a file of `len`
    /// bytes: the block whose first line is the last one not after it. None when `needle`
    /// sorts before every line.
    pub fn block_of(&self, needle: &[u8], len: u64) -> Option<(u64, u64)> {
        let i = self.firsts.partition_point(|f| f.as_ref() <= needle);
        let block = i.checked_sub(1)?;
        let end = self.starts.get(block + 1).copied().unwrap_or(len);
        Some((*self.starts.get(block)?, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_from(text: &[u8]) -> impl Fn(u64, usize) -> Result<Vec<u8>> + '_ {
        // Short reads (300 bytes at most) so lines and blocks span reads.
        move |at, size| {
            let at = at as usize;
            Ok(text[at..(at + size.min(300)).min(text.len())].to_vec())
        }
    }

    #[test]
    fn each_line_is_found_in_the_block_its_search_names_and_no_other_value_is() {
        let lines: Vec<String> = (0..3000u32)
            .map(|i| format!("{:08}.{}", i * 2, "x".repeat((i % 37) as usize)))
            .collect();
        let text: Vec<u8> = lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect();
        let len = text.len() as u64;
        let index = LineIndex::build(len, read_from(&text)).unwrap();
        // Lines far shorter than a block: a line starts in every block.
        assert!(
            index.starts.len() as u64 >= len / BLOCK,
            "{} entries",
            index.starts.len()
        );
        let holds = |needle: &[u8]| {
            index.block_of(needle, len).is_some_and(|(start, end)| {
                text[start as usize..end as usize]
                    .split(|&b| b == b'\n')
                    .any(|l| l == needle)
            })
        };
        for l in &lines {
            assert!(holds(l.as_bytes()), "{l}");
        }
        for i in 0..3000u32 {
            let absent = format!("{:08}.", i * 2 + 1);
            assert!(!holds(absent.as_bytes()), "{absent}");
        }
        assert_eq!(index.block_of(b"0", len), None, "before every line");
        let empty = LineIndex::build(0, read_from(b"")).unwrap();
        assert_eq!(empty.block_of(b"x", 0), None);
    }
}
