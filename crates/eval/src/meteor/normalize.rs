//! METEOR 1.5's English normalizer (`Normalizer.normalizeLine(line, LANG_EN, keepPunct = true)`),
//! a Moses-style tokenizer, rule for rule. Each Java `replaceAll` is a left-to-right scan
//! for non-overlapping matches; `\p{Digit}` and `\p{Lower}` are ASCII-only, `\s` is
//! `[ \t\n\x0B\f\r]`.

use crate::fast_hash::FastMap;

/// Non-breaking prefixes (`nonbreaking/english.prefixes`): a token `prefix.` keeps its dot.
#[derive(Debug, Clone, Default)]
pub struct NonbreakingPrefixes {
    /// `true` for `#NUMERIC_ONLY#` prefixes (kept only before a number).
    prefixes: FastMap<String, bool>,
}

impl NonbreakingPrefixes {
    /// Parses the prefix file: one prefix per line, `#` comments, optional `#NUMERIC_ONLY#`.
    pub fn parse(text: &str) -> NonbreakingPrefixes {
        let mut prefixes = FastMap::default();
        for line in java_lines(text) {
            let mut tokens = string_tokens(line);
            let Some(prefix) = tokens.next() else {
                continue;
            };
            if prefix.starts_with('#') {
                continue;
            }
            let numeric_only = tokens.next() == Some("#NUMERIC_ONLY#");
            prefixes.insert(prefix.to_string(), numeric_only);
        }
        NonbreakingPrefixes { prefixes }
    }

    fn get(&self, prefix: &str) -> Option<bool> {
        self.prefixes.get(prefix).copied()
    }
}

/// Lines as Java's `BufferedReader.readLine` sees them (`\n`, `\r` or `\r\n` end a line).
pub(crate) fn java_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\n', '\r']) {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
        }
    })
}

/// Tokens as `java.util.StringTokenizer` splits them (on space, tab, `\n`, `\r` and form feed).
pub(crate) fn string_tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split([' ', '\t', '\n', '\r', '\x0c']).filter(|token| !token.is_empty())
}

/// Java's `String.trim()`: strips code units up to U+0020 at both ends.
pub(crate) fn java_trim(text: &str) -> &str {
    text.trim_matches(|c: char| c <= ' ')
}

fn is_alpha(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z' | '\u{160}' | '\u{17d}' | '\u{161}' | '\u{17e}' | '\u{178}'
        | '\u{c0}'..='\u{d6}' | '\u{d8}'..='\u{f6}' | '\u{f8}'..='\u{17e}'
        | '\u{400}'..='\u{4ff}' | '\u{500}'..='\u{527}' | '\u{a640}'..='\u{a66e}'
        | '\u{a67e}'..='\u{a697}' | '\u{1d00}'..='\u{1d7f}')
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_alnum(c: char) -> bool {
    is_digit(c) || is_alpha(c)
}

/// Java regex `\s` without UNICODE_CHARACTER_CLASS.
fn is_java_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// `replaceAll` of a three-character pattern `(A)[m](B)`: non-overlapping, left to right.
fn replace_triples(
    text: &str,
    left: impl Fn(char) -> bool,
    middle: char,
    right: impl Fn(char) -> bool,
    replacement: impl Fn(char, char, &mut String),
) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && left(chars[i]) && chars[i + 1] == middle && right(chars[i + 2]) {
            replacement(chars[i], chars[i + 2], &mut out);
            i += 3;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Replacement `$1 X $2`.
fn spaced(middle: &'static str) -> impl Fn(char, char, &mut String) {
    move |a, b, out| {
        out.push(a);
        out.push(' ');
        out.push_str(middle);
        out.push(' ');
        out.push(b);
    }
}

/// Replacement `$1 X$2`.
fn attached_right(middle: &'static str) -> impl Fn(char, char, &mut String) {
    move |a, b, out| {
        out.push(a);
        out.push(' ');
        out.push_str(middle);
        out.push(b);
    }
}

/// `\.([\.]+)` → ` DOTMULTI$1`.
fn mark_multi_dots(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '.' && chars.get(i + 1) == Some(&'.') {
            let mut j = i + 1;
            while chars.get(j) == Some(&'.') {
                j += 1;
            }
            out.push_str(" DOTMULTI");
            out.extend(&chars[i + 1..j]);
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `DOTMULTI\.([^\.])` → `DOTDOTMULTI $1`.
fn multi_dot_step(text: &str) -> String {
    const KEY: &str = "DOTMULTI.";
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(i) = rest.find(KEY) {
        let after = &rest[i + KEY.len()..];
        match after.chars().next() {
            Some(c) if c != '.' => {
                out.push_str(&rest[..i]);
                out.push_str("DOTDOTMULTI ");
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            _ => {
                // No match here; the scan resumes one character later.
                let skip = i + rest[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&rest[..skip]);
                rest = &rest[skip..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `([“”]|'')` → ` " `.
fn normalize_double_quotes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\u{201c}' || chars[i] == '\u{201d}' {
            out.push_str(" \" ");
            i += 1;
        } else if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
            out.push_str(" \" ");
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Runs of `[ \u2000-\u200a\u202f\u205f\u3000\u00a0]` become one space.
fn collapse_spaces(text: &str) -> String {
    let is_space = |c: char| matches!(c, ' ' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{a0}');
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for c in text.chars() {
        if is_space(c) {
            if !in_run {
                out.push(' ');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// `Normalizer.normalizeLine(line, LANG_EN, true)`: METEOR's `-norm` for English (before
/// the lowercasing, which the scorer applies afterwards).
pub fn normalize_line(line: &str, prefixes: &NonbreakingPrefixes) -> String {
    // Lowercase ASCII words and numbers between spaces (what the PTB tokenizer leaves of most
    // captions) pass every rule unchanged but the spacing.
    if line.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ') {
        return line.split(' ').filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ");
    }
    normalize_any_line(line, prefixes)
}

/// [`normalize_line`] by every rule.
fn normalize_any_line(line: &str, prefixes: &NonbreakingPrefixes) -> String {
    let mut s = String::with_capacity(line.len() + 16);
    s.push(' ');
    s.push_str(line);
    s.push(' ');

    // Separate out everything but letters, digits, whitespace and . ' ` , - ‘ ’
    let mut t = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        let keep = is_alnum(c) || is_java_space(c) || matches!(c, '.' | '\'' | '`' | ',' | '-' | '\u{2018}' | '\u{2019}');
        if keep {
            t.push(c);
        } else {
            t.push(' ');
            t.push(c);
            t.push(' ');
        }
    }
    s = t;

    // Multi-dots
    s = mark_multi_dots(&s);
    while s.contains("DOTMULTI.") {
        s = multi_dot_step(&s);
        s = s.replace("DOTMULTI.", "DOTDOTMULTI");
    }

    // Commas not inside numbers
    s = replace_triples(&s, |c| !is_digit(c), ',', |c| !is_digit(c), spaced(","));
    s = replace_triples(&s, is_digit, ',', |c| !is_digit(c), spaced(","));
    s = replace_triples(&s, |c| !is_digit(c), ',', is_digit, spaced(","));

    // Quotes and dashes
    s = s.chars().map(|c| if matches!(c, '`' | '\u{2018}' | '\u{2019}') { '\'' } else { c }).collect();
    s = normalize_double_quotes(&s);
    s = s.replace('\u{2013}', "-");
    s = s.replace("--", "-");
    s = replace_triples(
        &s,
        |c| is_alnum(c) || c == '.',
        '-',
        is_alnum,
        |a, b, out| {
            out.push(a);
            out.push(' ');
            out.push(b);
        },
    );

    // English contractions
    s = replace_triples(&s, |c| !is_alpha(c), '\'', |c| !is_alpha(c), spaced("'"));
    s = replace_triples(&s, |c| !is_alpha(c) && !is_digit(c), '\'', is_alpha, spaced("'"));
    s = replace_triples(&s, is_alpha, '\'', |c| !is_alpha(c), spaced("'"));
    s = replace_triples(&s, is_alpha, '\'', is_alpha, attached_right("'"));
    s = replace_triples(&s, is_digit, '\'', |c| c == 's', attached_right("'"));

    // Final dots: split off unless a non-breaking prefix or an abbreviation with inner dots
    let words: Vec<&str> = string_tokens(&s).collect();
    let mut out = String::with_capacity(s.len() + 8);
    for (i, &word) in words.iter().enumerate() {
        let units = word.encode_utf16().count();
        if units > 1 && word.ends_with('.') {
            let prefix = &word[..word.len() - 1];
            let kind = prefixes.get(prefix);
            let next = words.get(i + 1);
            if prefix.contains('.') && prefix.chars().any(is_alpha) {
                out.push_str(&word.replace('.', ""));
            } else if kind == Some(false)
                || next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
                || (kind == Some(true) && next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())))
            {
                // A non-breaking prefix, or a lowercase word follows: the dot stays.
                out.push_str(word);
            } else {
                out.push_str(prefix);
                out.push_str(" .");
            }
        } else {
            out.push_str(word);
        }
        out.push(' ');
    }
    s = out;

    while s.contains("DOTDOTMULTI") {
        s = s.replace("DOTDOTMULTI", "DOTMULTI.");
    }
    s = s.replace("DOTMULTI", ".");

    java_trim(&collapse_spaces(&s)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIXES: &str = "# comment\nA\nMr\nv\nvs\ni.e\nrev\ne.g\nNo #NUMERIC_ONLY#\npp #NUMERIC_ONLY#\n";

    fn norm(line: &str) -> String {
        normalize_line(line, &NonbreakingPrefixes::parse(PREFIXES)).to_lowercase()
    }

    #[test]
    fn plain_lowercase_lines_take_the_short_way_to_the_same_result() {
        let prefixes = NonbreakingPrefixes::parse(PREFIXES);
        for line in ["a dog runs", "  two  dogs 3 cats ", "dotmulti dotdotmulti", "", " ", "a1 22 b", "x"] {
            assert_eq!(normalize_line(line, &prefixes), normalize_any_line(line, &prefixes), "{line:?}");
        }
    }

    #[test]
    fn separates_punctuation_and_splits_hyphens() {
        assert_eq!(norm("a well-known man"), "a well known man");
        assert_eq!(norm("3/4 of it"), "3 / 4 of it");
        assert_eq!(norm("wow !!!"), "wow ! ! !");
        assert_eq!(norm("-lrb- a -rrb-"), "-lrb- a -rrb-");
        assert_eq!(norm("a , b"), "a , b");
        assert_eq!(norm("1,000 dogs"), "1,000 dogs");
        assert_eq!(norm("a-b-c"), "a b-c");
    }

    #[test]
    fn contractions_and_quotes() {
        assert_eq!(norm("do n't"), "do n 't");
        assert_eq!(norm("don't"), "don 't");
        assert_eq!(norm("a cat 's toy"), "a cat ' s toy");
        assert_eq!(norm("the 1990's"), "the 1990 's");
        assert_eq!(norm("``quoted''"), "\" quoted \"");
    }

    /// Expected values are the jar's own output (`Normalizer.normalizeLine(s, 0, true)`).
    #[test]
    fn final_dots() {
        assert_eq!(norm("mr."), "mr .");
        assert_eq!(norm("t.v. stand"), "tv stand");
        assert_eq!(norm("in the u.s.a."), "in the usa");
        assert_eq!(norm("e.g. this"), "eg this");
        assert_eq!(norm("x.y.z"), "x.y.z");
        assert_eq!(norm("a. b"), "a. b");
        assert_eq!(norm("x. Y"), "x . y");
        assert_eq!(norm("v. the"), "v. the");
        assert_eq!(norm("pp. 5"), "pp. 5");
        assert_eq!(norm("wait... what"), "wait ... what");
        assert_eq!(norm("a.."), "a ..");
        assert_eq!(norm("a....b"), "a .... b");
    }
}
