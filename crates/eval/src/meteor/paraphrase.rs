//! METEOR 1.5's English paraphrase table (`paraphrase-en.gz`, read by `ParaphraseTransducer`).
//!
//! The file holds 5,274,084 entries of three lines: a probability (ignored), a reference
//! phrase and one of its paraphrases, sorted by reference phrase (430,639 distinct ones, up
//! to 7 words). The jar builds a trie of word ids over the reference phrases; here the
//! paraphrases stay text in one buffer (about 87 MB, plus 21 MB of offsets), grouped by
//! reference phrase, in file order within a group: the aligner sees the matches in that
//! order, and the order matters to its beam search. Words compare as strings, which is what
//! the jar's word ids amount to. Lines end at `\n` (the file has no `\r`).

use std::io::{ErrorKind, Read};
use std::sync::mpsc;

use crate::fast_hash::{FastMap, hash_bytes};

/// The table, indexed, as one byte string (see [`Layout`]): built in memory from the gzipped
/// file, or mapped from the binary cache ([`crate::meteor::cache`]) without being copied.
#[derive(Debug)]
pub struct ParaphraseTable {
    bytes: Bytes,
    layout: Layout,
}

/// Where the table's bytes are.
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    /// `map[offset..end]`.
    Mapped {
        map: memmap2::Mmap,
        offset: usize,
        end: usize,
    },
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = if matches!(self, Bytes::Owned(_)) { "in memory" } else { "mapped" };
        write!(f, "{} bytes {place}", self.len())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(bytes) => bytes,
            Bytes::Mapped { map, offset, end } => &map[*offset..*end],
        }
    }
}

/// The byte string: a header of seven little-endian u64 (the longest reference phrase in
/// words, then the lengths of the six arrays below), then the arrays, u32 ones little-endian:
///
/// * `slots`: an open-addressing index over the reference phrases and their word prefixes,
///   a power-of-two number of slots, each 0 (empty) or a group number + 1, probed linearly
///   from [`phrase_hash`]. A prefix that is not itself a reference phrase is a group without
///   entries, so that a lookup stops at the first prefix no phrase starts with;
/// * `key_starts`: group `g`'s phrase (words joined by single spaces) is
///   `keys[key_starts[g]..key_starts[g + 1]]`;
/// * `ranges`: group `g`'s entries are `ranges[2g]..ranges[2g + 1]`;
/// * `starts`: entry `e`'s paraphrase is `text[starts[e]..starts[e + 1]]`;
/// * `keys` and `text`: the phrases and the paraphrases, one after the other.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    max_len: usize,
    slots: (usize, usize),
    key_starts: (usize, usize),
    ranges: (usize, usize),
    starts: (usize, usize),
    keys: (usize, usize),
    text: (usize, usize),
}

const HEADER: usize = 7 * 8;

/// The table while it is built, as arrays (see [`Layout`]).
#[derive(Debug, Default)]
struct Arrays {
    slots: Vec<u32>,
    keys: Vec<u8>,
    key_starts: Vec<u32>,
    ranges: Vec<u32>,
    text: Vec<u8>,
    starts: Vec<u32>,
    max_len: usize,
}

impl Arrays {
    /// The byte string of [`Layout`].
    fn encode(&self) -> Vec<u8> {
        let u32s = [&self.slots, &self.key_starts, &self.ranges, &self.starts];
        let size = HEADER + u32s.iter().map(|a| 4 * a.len()).sum::<usize>() + self.keys.len() + self.text.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(self.max_len as u64).to_le_bytes());
        for len in u32s.iter().map(|a| a.len()).chain([self.keys.len(), self.text.len()]) {
            out.extend_from_slice(&(len as u64).to_le_bytes());
        }
        for array in u32s {
            out.extend(array.iter().flat_map(|v| v.to_le_bytes()));
        }
        out.extend_from_slice(&self.keys);
        out.extend_from_slice(&self.text);
        out
    }
}

impl PartialEq for ParaphraseTable {
    fn eq(&self, other: &Self) -> bool {
        *self.bytes == *other.bytes
    }
}

/// The hash that places a reference phrase in [`ParaphraseTable`]'s index: fixed, since the
/// index is stored.
fn phrase_hash(phrase: &[u8]) -> u64 {
    hash_bytes(phrase)
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
            builder.table.key_starts.push(0);
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

    /// The table in `bytes` (the byte string of [`Layout`]), checked so that no offset in it
    /// leads outside the arrays (a damaged file is an error, never a panic later).
    pub(crate) fn from_bytes(bytes: Bytes) -> Result<ParaphraseTable, String> {
        let layout = Layout::of(&bytes)?;
        let table = ParaphraseTable { bytes, layout };
        table.check().map(|()| table)
    }

    /// The table's byte string (what the cache stores).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn u32_at(&self, (offset, len): (usize, usize), i: usize) -> u32 {
        debug_assert!(i < len);
        let at = offset + 4 * i;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn slice(&self, (offset, _): (usize, usize), from: u32, to: u32) -> &[u8] {
        &self.bytes[offset + from as usize..offset + to as usize]
    }

    fn groups(&self) -> usize {
        self.layout.key_starts.1 - 1
    }

    fn key(&self, group: usize) -> &[u8] {
        let l = self.layout;
        self.slice(l.keys, self.u32_at(l.key_starts, group), self.u32_at(l.key_starts, group + 1))
    }

    fn paraphrase(&self, entry: usize) -> &[u8] {
        let l = self.layout;
        self.slice(l.text, self.u32_at(l.starts, entry), self.u32_at(l.starts, entry + 1))
    }

    /// Number of entries (reference phrase, paraphrase) in the table.
    pub fn len(&self) -> usize {
        self.layout.starts.1 - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `ParaphraseTransducer.getReferencePaths`: for each length `len` (shortest first) such
    /// that `words[start..start + len]` is a reference phrase, its paraphrases (words joined
    /// by single spaces) in file order.
    pub(crate) fn paths<'t, S: AsRef<str>>(&'t self, words: &[S], start: usize, mut visit: impl FnMut(usize, &'t [u8])) {
        let end = words.len().min(start + self.layout.max_len);
        let mut key = Vec::with_capacity(64);
        for stop in start + 1..=end {
            if stop > start + 1 {
                key.push(b' ');
            }
            key.extend_from_slice(words[stop - 1].as_ref().as_bytes());
            // No reference phrase starts with these words: none is longer either.
            let Some(group) = self.group(&key) else {
                break;
            };
            let ranges = self.layout.ranges;
            for entry in self.u32_at(ranges, 2 * group) as usize..self.u32_at(ranges, 2 * group + 1) as usize {
                visit(stop - start, self.paraphrase(entry));
            }
        }
    }

    /// The group whose reference phrase (or prefix of one) is `key`.
    fn group(&self, key: &[u8]) -> Option<usize> {
        let mask = self.layout.slots.1.checked_sub(1)?;
        let mut slot = phrase_hash(key) as usize & mask;
        loop {
            let group = self.u32_at(self.layout.slots, slot).checked_sub(1)? as usize;
            if self.key(group) == key {
                return Some(group);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn check(&self) -> Result<(), String> {
        let l = self.layout;
        let (groups, entries) = (self.groups(), self.len());
        let ascending = |section: (usize, usize), limit: usize| {
            let mut previous = 0;
            (0..section.1).all(|i| {
                let value = self.u32_at(section, i);
                let ok = value >= previous && value as usize <= limit;
                previous = value;
                ok
            })
        };
        if !l.slots.1.is_power_of_two() || (0..l.slots.1).any(|i| self.u32_at(l.slots, i) as usize > groups) {
            return Err("bad index".into());
        }
        if !ascending(l.key_starts, l.keys.1) || !ascending(l.starts, l.text.1) {
            return Err("bad offsets".into());
        }
        let bad_range = |g: usize| {
            let (from, to) = (self.u32_at(l.ranges, 2 * g), self.u32_at(l.ranges, 2 * g + 1));
            from > to || to as usize > entries
        };
        if l.ranges.1 != 2 * groups || (0..groups).any(bad_range) {
            return Err("bad entry ranges".into());
        }
        Ok(())
    }
}

impl Layout {
    /// The sections of `bytes`, which must be exactly their size.
    fn of(bytes: &[u8]) -> Result<Layout, String> {
        let mut input = bytes;
        let mut next = || -> Result<usize, String> { usize::try_from(read_u64(&mut input)?).map_err(|e| e.to_string()) };
        let max_len = next()?;
        let lens = [next()?, next()?, next()?, next()?, next()?, next()?];
        let mut offset = HEADER;
        let mut sections = [(0, 0); 6];
        for (k, (&len, section)) in lens.iter().zip(&mut sections).enumerate() {
            *section = (offset, len);
            let size = if k < 4 { len.checked_mul(4).ok_or("bad length")? } else { len };
            offset = offset.checked_add(size).ok_or("bad length")?;
        }
        if offset != bytes.len() {
            return Err(format!("{} bytes where the header says {offset}", bytes.len()));
        }
        let [slots, key_starts, ranges, starts, keys, text] = sections;
        if key_starts.1 == 0 || starts.1 == 0 {
            return Err("no offsets".into());
        }
        Ok(Layout { max_len, slots, key_starts, ranges, starts, keys, text })
    }
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if input.len() < len {
        return Err("the file ends early".into());
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

pub(crate) fn read_u64(input: &mut &[u8]) -> Result<u64, String> {
    Ok(u64::from_le_bytes(take(input, 8)?.try_into().expect("8 bytes")))
}

pub(crate) fn read_bytes(input: &mut &[u8]) -> Result<Vec<u8>, String> {
    let len = usize::try_from(read_u64(input)?).map_err(|e| e.to_string())?;
    Ok(take(input, len)?.to_vec())
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
    table: Arrays,
    /// Reference phrase → group, while reading.
    groups: FastMap<Box<[u8]>, u32>,
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
                    self.group = match self.groups.get(reference) {
                        Some(&group) => {
                            // Only in a table that is not sorted by reference phrase.
                            self.unsorted = true;
                            group
                        }
                        None => {
                            let group = self.groups_seen;
                            self.groups_seen += 1;
                            let words = if reference.is_empty() { 0 } else { phrase_len(reference) };
                            self.table.max_len = self.table.max_len.max(words);
                            self.groups.insert(reference.into(), group);
                            self.table.keys.extend_from_slice(reference);
                            self.table.key_starts.push(self.table.keys.len() as u32);
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
        let table = self.arrays()?;
        ParaphraseTable::from_bytes(Bytes::Owned(table.encode())).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
    }

    fn arrays(&mut self) -> std::io::Result<Arrays> {
        let mut table = std::mem::take(&mut self.table);
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
        let mut ranges = vec![0u32; 2 * self.groups_seen as usize];
        let mut start = 0;
        while start < self.entry_groups.len() {
            let group = self.entry_groups[start] as usize;
            let mut end = start + 1;
            while end < self.entry_groups.len() && self.entry_groups[end] as usize == group {
                end += 1;
            }
            (ranges[2 * group], ranges[2 * group + 1]) = (start as u32, end as u32);
            start = end;
        }
        table.ranges = ranges;
        add_prefixes(&mut table, &self.groups);
        table.slots = index(&table.keys, &table.key_starts);
        // The paraphrases are checked once, here (reference phrases as they come).
        std::str::from_utf8(&table.text).map_err(invalid)?;
        Ok(table)
    }
}

/// Adds every word prefix of a reference phrase that is not itself one, as a group without
/// entries.
fn add_prefixes(table: &mut Arrays, phrases: &FastMap<Box<[u8]>, u32>) {
    let mut prefixes: FastMap<Box<[u8]>, ()> = FastMap::default();
    let groups = table.key_starts.len() - 1;
    for group in 0..groups {
        let (start, end) = (table.key_starts[group] as usize, table.key_starts[group + 1] as usize);
        let spaces: Vec<usize> = (start..end).filter(|&at| table.keys[at] == b' ').collect();
        for at in spaces {
            let prefix = &table.keys[start..at];
            if !phrases.contains_key(prefix) && !prefixes.contains_key(prefix) {
                prefixes.insert(prefix.into(), ());
                table.keys.extend_from_within(start..at);
                table.key_starts.push(table.keys.len() as u32);
                table.ranges.extend([0, 0]);
            }
        }
    }
}

/// The open-addressing index of the keys (load factor at most one half).
fn index(keys: &[u8], key_starts: &[u32]) -> Vec<u32> {
    let groups = key_starts.len() - 1;
    let mut slots = vec![0u32; (2 * groups).next_power_of_two().max(2)];
    let mask = slots.len() - 1;
    for group in 0..groups {
        let key = &keys[key_starts[group] as usize..key_starts[group + 1] as usize];
        let mut slot = phrase_hash(key) as usize & mask;
        while slots[slot] != 0 {
            slot = (slot + 1) & mask;
        }
        slots[slot] = group as u32 + 1;
    }
    slots
}

fn invalid(e: std::str::Utf8Error) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, format!("paraphrase table is not UTF-8: {e}"))
}

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
