//! PTB-style tokenization as pycocoevalcap applies it (SPEC.md §1).
//!
//! Provisional implementation: lowercases, splits clitics and punctuation, drops the
//! punctuation tokens pycocoevalcap removes.

/// Tokens pycocoevalcap removes after PTB tokenization (lowercase comparison never matches the
/// bracket escapes, so those survive, as in pycocoevalcap).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
    "...", ";",
];

/// Final tokens of one caption: PTB tokenization, lowercasing, punctuation removal.
pub fn tokenize_words(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    for raw in lower.split_whitespace() {
        let mut word = String::new();
        for ch in raw.chars() {
            if ch.is_alphanumeric() || ch == '-' || ch == '\'' {
                word.push(ch);
            } else {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                out.push(ch.to_string());
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out.into_iter().filter(|t| !PUNCTUATIONS.contains(&t.as_str())).collect()
}
