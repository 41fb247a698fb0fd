//! METEOR 1.5's English paraphrase table (`paraphrase-en.gz`, read by `ParaphraseTransducer`).
//!
//! The file holds 5,274,084 entries of three lines: a probability (ignored), a reference
//! phrase and one of its paraphrases, sorted by reference phrase (430,639 distinct ones, up
//! to 7 words). The jar builds a trie of word ids over the reference phrases; here the
//! paraphrases stay text in one buffer (about 87 MB, plus 21 MB of offsets), grouped by
//! reference phrase, in file order within a group: the aligner sees the matches in that
//! order, and the order matters to its beam search. Words compare as strings, which is what
//! the jar's word ids amount to. Lines end at `\n` (the file has no `\r`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{ErrorKind, Read};
use std::sync::mpsc;

#[derive(Debug, Default)]
pub struct ParaphraseTable {
    /// Reference phrase (words joined by single spaces) → range of entries.
    groups: FastMap<Box<[u8]>, (u32, u32)>,
    /// The paraphrases, words joined by single spaces, one after the other.
    text: Vec<u8>,
    /// Entry `e`'s paraphrase is `text[starts[e]..starts[e + 1]]`.
    starts: Vec<u32>,
    /// The longest reference phrase, in words.
    max_len: usize,
}

impl ParaphraseTable {
    /// Reads the decompressed table. A second thread does the reading (in practice the
    /// decompression) while this one indexes.
    pub fn read(reader: impl Read + Send) -> std::io::Result<ParaphraseTable> {
        const CHUNK: usize = 1 << 22;
        std::thread::scope(|scope| {
            let (full_sender, full) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(2);
            let (empty_sender, empty) = mpsc::channel::<Vec<u8>>();
            scope.spawn(move || {
                let mut reader = reader;
                loop {
                    let mut chunk = empty.try_recv().unwrap_or_default();
                    chunk.resize(CHUNK, 0);
                    let mut filled = 0;
                    while filled < CHUNK {
                        match reader.read(&mut chunk[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) => {
                                let _ = full_sender.send(Err(e));
                                return;
                            }
                        }
                    }
                    chunk.truncate(filled);
                    if full_sender.send(Ok(chunk)).is_err() || filled < CHUNK {
                        return;
                    }
                }
            });
            let mut builder = Builder::default();
            builder.table.starts.push(0);
            // The start of a line that continues in the next chunk.
            let mut carry = Vec::new();
            for chunk in full {
                let chunk = chunk?;
                let mut rest = chunk.as_slice();
                if !carry.is_empty() {
                    match find_newline(rest) {
                        Some(end) => {
                            carry.extend_from_slice(&rest[..end]);
                            builder.line(&carry)?;
                            carry.clear();
                            rest = &rest[end + 1..];
                        }
                        None => {
                            carry.extend_from_slice(rest);
                            rest = &[];
                        }
                    }
                }
                while let Some(end) = find_newline(rest) {
                    builder.line(&rest[..end])?;
                    rest = &rest[end + 1..];
                }
                carry.extend_from_slice(rest);
                let _ = empty_sender.send(chunk);
            }
            if !carry.is_empty() {
                builder.line(&carry)?;
            }
            builder.finish()
        })
    }

    /// Number of entries (reference phrase, paraphrase) in the table.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `ParaphraseTransducer.getReferencePaths`: for each length `len` (shortest first) such
    /// that `words[start..start + len]` is a reference phrase, its paraphrases (words joined
    /// by single spaces) in file order.
    pub(crate) fn paths<S: AsRef<str>>(&self, words: &[S], start: usize, mut visit: impl FnMut(usize, &[u8])) {
        let end = words.len().min(start + self.max_len);
        let mut key = Vec::with_capacity(64);
        for stop in start + 1..=end {
            if stop > start + 1 {
                key.push(b' ');
            }
            key.extend_from_slice(words[stop - 1].as_ref().as_bytes());
            if let Some(&(from, to)) = self.groups.get(key.as_slice()) {
                for e in from as usize..to as usize {
                    let text = &self.text[self.starts[e] as usize..self.starts[e + 1] as usize];
                    visit(stop - start, text);
                }
            }
        }
    }
}

/// Whether `phrase` (words joined by single spaces) occurs in `words` at `at`.
pub(crate) fn occurs_at<S: AsRef<str>>(words: &[S], at: usize, phrase: &[u8]) -> bool {
    phrase.split(|&b| b == b' ').enumerate().all(|(k, word)| words.get(at + k).is_some_and(|w| w.as_ref().as_bytes() == word))
}

/// Number of words in a phrase (words joined by single spaces).
pub(crate) fn phrase_len(phrase: &[u8]) -> usize {
    phrase.iter().filter(|&&b| b == b' ').count() + 1
}

#[derive(Default)]
struct Builder {
    table: ParaphraseTable,
    /// Which of the three lines of an entry comes next.
    line_in_entry: u8,
    /// The group of the current entry (index into the group ranges).
    group: u32,
    groups_seen: u32,
    previous_reference: Vec<u8>,
    /// Group of each entry, in file order.
    entry_groups: Vec<u32>,
    /// A reference phrase came back after another one: the file is not sorted.
    unsorted: bool,
    scratch: Vec<u8>,
}

/// `line` with its words joined by single spaces (`StringTokenizer` semantics), borrowing
/// when it already is.
fn canonical<'a>(line: &'a [u8], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let is_delimiter = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\x0c');
    // Branch-free scans (they vectorize): control bytes, and two spaces in a row.
    let controls = line.iter().fold(false, |acc, &b| acc | (b < b' '));
    let double_spaces = line.iter().zip(line.iter().skip(1)).fold(false, |acc, (&a, &b)| acc | ((a == b' ') & (b == b' ')));
    let clean = !controls && !double_spaces && !line.first().is_some_and(is_delimiter) && !line.last().is_some_and(is_delimiter);
    if clean {
        return line;
    }
    scratch.clear();
    for word in line.split(is_delimiter).filter(|w| !w.is_empty()) {
        if !scratch.is_empty() {
            scratch.push(b' ');
        }
        scratch.extend_from_slice(word);
    }
    scratch
}

/// Position of the first `\n`, eight bytes at a time.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = ONES * b'\n' as u64;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap()) ^ NEWLINES;
        let zero = word.wrapping_sub(ONES) & !word & HIGHS;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}

impl Builder {
    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let which = self.line_in_entry;
        self.line_in_entry = (which + 1) % 3;
        match which {
            0 => {}
            1 => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let reference = canonical(line, &mut scratch);
                if self.groups_seen == 0 || reference != self.previous_reference.as_slice() {
                    std::str::from_utf8(reference).map_err(invalid)?;
                    self.group = match self.table.groups.get(reference) {
                        Some(&(group, _)) => {
                            // Only in a table that is not sorted by reference phrase.
                            self.unsorted = true;
                            group
                        }
                        None => {
                            let group = self.groups_seen;
                            self.groups_seen += 1;
                            let words = if reference.is_empty() { 0 } else { phrase_len(reference) };
                            self.table.max_len = self.table.max_len.max(words);
                            self.table.groups.insert(reference.into(), (group, 0));
                            group
                        }
                    };
                    self.previous_reference.clear();
                    self.previous_reference.extend_from_slice(reference);
                }
                self.scratch = scratch;
            }
            _ => {
                let mut scratch = std::mem::take(&mut self.scratch);
                let paraphrase = canonical(line, &mut scratch);
                self.table.text.extend_from_slice(paraphrase);
                let end = u32::try_from(self.table.text.len())
                    .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, "paraphrase table too large"))?;
                self.table.starts.push(end);
                self.entry_groups.push(self.group);
                self.scratch = scratch;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<ParaphraseTable> {
        let mut table = self.table;
        if self.line_in_entry != 0 {
            return Err(std::io::Error::new(ErrorKind::InvalidData, "paraphrase table ends in the middle of an entry"));
        }
        if self.unsorted {
            // Regroup the entries, keeping file order within each group.
            let mut order: Vec<u32> = (0..self.entry_groups.len() as u32).collect();
            order.sort_by_key(|&e| self.entry_groups[e as usize]);
            let mut text = Vec::with_capacity(table.text.len());
            let mut starts = Vec::with_capacity(table.starts.len());
            starts.push(0);
            for &e in &order {
                let e = e as usize;
                text.extend_from_slice(&table.text[table.starts[e] as usize..table.starts[e + 1] as usize]);
                starts.push(text.len() as u32);
            }
            table.text = text;
            table.starts = starts;
            self.entry_groups = order.iter().map(|&e| self.entry_groups[e as usize]).collect();
        }
        let mut ranges = vec![(0u32, 0u32); self.groups_seen as usize];
        let mut start = 0;
        while start < self.entry_groups.len() {
            let group = self.entry_groups[start];
            let mut end = start + 1;
            while end < self.entry_groups.len() && self.entry_groups[end] == group {
                end += 1;
            }
            ranges[group as usize] = (start as u32, end as u32);
            start = end;
        }
        for range in table.groups.values_mut() {
            *range = ranges[range.0 as usize];
        }
        // The paraphrases are checked once, here (reference phrases as they come).
        std::str::from_utf8(&table.text).map_err(invalid)?;
        table.text.shrink_to_fit();
        table.starts.shrink_to_fit();
        Ok(table)
    }
}

fn invalid(e: std::str::Utf8Error) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, format!("paraphrase table is not UTF-8: {e}"))
}

/// FxHash (rustc's hasher): much faster than SipHash on millions of short keys; the keys are
/// the table's own phrases, so hash flooding is no concern.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        // FxHash leaves the low bits (which pick the bucket) poorly mixed: fold the high
        // bits in.
        let h = self.0;
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_entries_by_reference_phrase_in_file_order() {
        let text = "0.1\na b\nc\n0.2\na  b\nd\te\n0.3\nx\ny\n0.4\na\nz\n0.5\na b\nc";
        let table = ParaphraseTable::read(text.as_bytes()).unwrap();
        assert_eq!(table.len(), 5);
        let words = ["a", "b", "q"];
        let mut seen = Vec::new();
        table.paths(&words, 0, |len, phrase| {
            seen.push((len, String::from_utf8(phrase.to_vec()).unwrap()));
        });
        assert_eq!(seen, [(1, "z".into()), (2, "c".into()), (2, "d e".into()), (2, "c".into())]);
        let mut none = 0;
        table.paths(&words, 2, |_, _| none += 1);
        assert_eq!(none, 0);
        assert!(occurs_at(&["x", "d", "e"], 1, b"d e"));
        assert!(!occurs_at(&["x", "d"], 1, b"d e"));
        assert_eq!(phrase_len(b"d e"), 2);
    }
}
