//! PTB tokenization as pycocoevalcap applies it (SPEC.md §1), without Java.
//!
//! pycocoevalcap runs Stanford CoreNLP 3.4.1's `PTBTokenizer -preserveLines -lowerCase` over all
//! captions of one dictionary joined by `\n`, then drops a fixed list of punctuation tokens. This
//! crate is a clean-room reimplementation written from the documented behaviour and from
//! real tokenizer output (the shared fixtures), not from CoreNLP's source. It reproduces:
//!
//! * the lexer's token boundaries: clitics (`do n't`, `cat 's`, `can not`, `gon na`), hyphenated
//!   and slashed words, numbers (`1,000`, `5:30`, `.5`), fractions (`22 3/4` becomes one token
//!   whose space is U+00A0), abbreviations that keep their period (`st.`, `u.s.`, `a.`),
//!   e-mail addresses and URLs, and the single-character symbols it splits off;
//! * its escaping and normalisation: brackets become `-lrb-`/`-rsb-`/..., quotes become
//!   `` `` ``/`''`, `…` becomes `...`, dashes become `--`, `½` becomes `1/2`, `&amp;` becomes `&`;
//! * what it deletes (characters outside the Basic Multilingual Plane, control characters) and
//!   what it treats as a space (U+00A0, U+200B, U+FEFF, tabs);
//! * pycocoevalcap's punctuation filter, including its quirk: the list spells the bracket
//!   escapes in upper case while the tokens are lower case, so `-lrb-` and friends survive;
//! * the line handling of the Java run: `\r`, `\r\n`, `\x0b`, `\x0c`, U+0085, U+2028 and U+2029
//!   inside a caption are line breaks for the lexer, which pycocoevalcap does not replace, so
//!   every later caption of the same run is attributed to the previous caption's slot
//!   ([`tokenize_captions`] reproduces this; [`count_extra_line_breaks`] detects it).
//!
//! Agreement: identical final tokens on all 50,000 captions of the shared PTB sample and on
//! every caption of the three scoring fixtures; identical PTB lines on 49,987 of the 50,000,
//! the 13 others differing only by the lone `.` below.
//!
//! Known limits, where the fixtures give little or no evidence and the behaviour is a best
//! guess: the abbreviation list beyond the abbreviations seen in COCO captions; single capital
//! letters with a period (kept as initials, `W. Centre`, except at the end of a line and for the
//! pronoun `I.`, as in the real output); the extra sentence-final `.` the Java lexer sometimes
//! emits after a line-final abbreviation (its lookahead reads the next line; the punctuation
//! filter removes it anyway, so it is not reproduced); currency signs other than `$`; phone
//! numbers and SGML markup; invisible format characters.

use rayon::prelude::*;

/// Tokens pycocoevalcap removes after PTB tokenization. The bracket escapes are upper case here
/// and the tokens are lower case, so `-lrb-`, `-rrb-`, `-lcb-`, `-rcb-` are never removed: this
/// is pycocoevalcap's behaviour and is kept on purpose.
pub const PUNCTUATIONS: [&str; 17] =
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

/// Final tokens of one caption, as BLEU, CIDEr-D and METEOR see them: PTB tokenization,
/// lower-casing, punctuation removal, then Python's `str.split()`.
///
/// Line breaks inside the caption are treated as spaces (a single caption has no following
/// caption to shift). A fraction such as `22 3/4` is one PTB token joined by U+00A0; Python's
/// `split()` (used by BLEU and CIDEr) splits it, so it yields two words here too. Use
/// [`tokenize_caption`] for the exact space-joined string pycocoevalcap produces.
pub fn tokenize_words(text: &str) -> Vec<String> {
    split_python_whitespace(&tokenize_caption(text)).map(str::to_owned).collect()
}

/// The final string pycocoevalcap produces for one caption tokenized on its own: the kept PTB
/// tokens joined by single spaces. Line breaks inside the caption are treated as spaces.
pub fn tokenize_caption(text: &str) -> String {
    let line: String = text.chars().map(|c| if is_java_line_break(c) { ' ' } else { c }).collect();
    remove_punctuation(&ptb_tokenize_line(&line))
}

/// Tokenizes a list of captions exactly as one pycocoevalcap `PTBTokenizer` run does: the
/// captions are joined by `\n` (after replacing each caption's own `\n` by a space), the Java
/// lexer splits the text into lines at every line break it knows, and line `i` is attributed to
/// caption `i`. Returns one final string per caption.
///
/// A caption containing `\r`, `\x0b`, `\x0c`, U+0085, U+2028 or U+2029 therefore occupies
/// several lines and shifts all later captions by one slot each; the surplus lines at the end
/// are dropped (Python's `zip`). This is pycocoevalcap's silent misalignment, reproduced
/// faithfully; call [`count_extra_line_breaks`] to detect it.
pub fn tokenize_captions<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let joined = join_for_java_run(captions);
    let lines: Vec<&str> = java_lines(&joined).take(captions.len()).collect();
    // Lines in parallel, collected in order.
    lines.par_iter().map(|line| remove_punctuation(&ptb_tokenize_line(line))).collect()
}

/// How many captions of a [`tokenize_captions`] run would be shifted: the number of Java line
/// breaks inside the captions themselves (`\n` excluded, pycocoevalcap replaces it).
pub fn count_extra_line_breaks<S: AsRef<str>>(captions: &[S]) -> usize {
    let joined = join_for_java_run(captions);
    java_lines(&joined).count().saturating_sub(captions.len().max(1))
}

/// The PTB tokens of one line (no line breaks inside), lower-cased, before punctuation removal:
/// what the Java tokenizer prints for that line, split on its spaces.
pub fn ptb_tokenize_line(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut lexer = Lexer { chars: &chars, tokens: Vec::new() };
    lexer.run();
    lexer.tokens
}

/// pycocoevalcap's filter: `' '.join(w for w in line.rstrip().split(' ') if w not in PUNCTUATIONS)`.
/// PTB tokens never contain a plain space, so the tokens are the `split(' ')` items.
fn remove_punctuation(tokens: &[String]) -> String {
    let kept: Vec<&str> = tokens.iter().map(String::as_str).filter(|t| !PUNCTUATIONS.contains(t)).collect();
    kept.join(" ")
}

/// Python's `str.split()` with no argument: splits on runs of Unicode whitespace, as
/// `str.isspace` defines it (Rust's `char::is_whitespace` plus the information separators
/// U+001C..U+001F), and drops empty items.
pub fn split_python_whitespace(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_python_whitespace).filter(|s| !s.is_empty())
}

fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn join_for_java_run<S: AsRef<str>>(captions: &[S]) -> String {
    let parts: Vec<String> = captions.iter().map(|c| c.as_ref().replace('\n', " ")).collect();
    parts.join("\n")
}

/// Line terminators of the Java lexer: `\n`, `\r`, `\r\n` (one break), vertical tab, form feed,
/// NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
fn is_java_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Splits text into the lines the Java lexer sees (`\r\n` counts once).
fn java_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.char_indices().find(|&(_, c)| is_java_line_break(c)) {
            None => {
                rest = None;
                Some(current)
            }
            Some((at, c)) => {
                let mut next = at + c.len_utf8();
                if c == '\r' && current[next..].starts_with('\n') {
                    next += 1;
                }
                rest = Some(&current[next..]);
                Some(&current[..at])
            }
        }
    })
}

/// Abbreviations that keep their final period. The lexer matches them regardless of case
/// (`St.`, `st.`, `ST.`); common English words are deliberately absent (`sun.`, `wash.`,
/// `mass.`, `ad.` lose their period in real output). Seen in COCO output: st, ave, rd, blvd,
/// mr, mrs, dr, jr, inc, penn, ky, la, etc; the others are standard abbreviations of the same
/// kinds (titles, street types, companies, months, US states) that are not English words.
#[rustfmt::skip]
const ABBREVIATIONS: &[&str] = &[
    // titles
    "mr", "mrs", "ms", "messrs", "mme", "mlle", "dr", "drs", "prof", "jr", "sr", "gov", "sen",
    "sens", "rep", "reps", "lt", "col", "gen", "capt", "cmdr", "sgt", "cpl", "pvt", "adm", "rev",
    "hon", "esq",
    // places and streets
    "st", "ave", "rd", "blvd", "hwy", "pkwy", "mt", "ft", "ln", "jct", "mtn", "rte", "bldg", "apt",
    // companies
    "inc", "corp", "co", "ltd", "bros", "assn", "dept", "univ",
    // months
    "jan", "feb", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    // US states
    "ala", "ariz", "ark", "calif", "colo", "conn", "fla", "ga", "ky", "la", "md", "mich", "minn",
    "neb", "nev", "okla", "penn", "pa", "tenn", "tex", "va", "vt", "wis", "wyo",
    // miscellany
    "etc", "vs", "approx", "cf",
];

struct Lexer<'a> {
    chars: &'a [char],
    tokens: Vec<String>,
}

/// One candidate token (or group of tokens, for clitic splits) starting at the current position.
struct Match {
    end: usize,
    tokens: Vec<String>,
}

impl Match {
    fn single(end: usize, token: impl Into<String>) -> Match {
        Match { end, tokens: vec![token.into()] }
    }
}

impl Lexer<'_> {
    fn run(&mut self) {
        let mut i = 0;
        while i < self.chars.len() {
            let c = self.chars[i];
            if is_lexer_space(c) || is_untokenizable(c) {
                // Untokenizable characters are deleted by the Java lexer (with a warning); they
                // still end the token before them, like a space.
                i += 1;
                continue;
            }
            let found = self.longest_match(i);
            debug_assert!(found.end > i);
            i = found.end;
            self.tokens.extend(found.tokens.into_iter().map(|t| t.to_lowercase()));
        }
    }

    /// Like a flex scanner: every rule is tried and the longest match wins; on a tie the rule
    /// listed first wins.
    fn longest_match(&self, i: usize) -> Match {
        let rules: [fn(&Self, usize) -> Option<Match>; 8] =
            [Self::url, Self::email, Self::fraction, Self::smiley, Self::sgml_or_entity, Self::word, Self::number, Self::punctuation];
        let mut best: Option<Match> = None;
        for rule in rules {
            if let Some(m) = rule(self, i)
                && best.as_ref().is_none_or(|b| m.end > b.end)
            {
                best = Some(m);
            }
        }
        best.unwrap_or_else(|| Match::single(i + 1, self.chars[i].to_string()))
    }

    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn text(&self, from: usize, to: usize) -> String {
        self.chars[from..to].iter().collect()
    }

    /// True when the token starting at `i` follows a space or the start of the line (or an
    /// opening bracket or quote): the position of an opening quote.
    fn at_token_start(&self, i: usize) -> bool {
        i == 0 || matches!(self.chars[i - 1], c if is_lexer_space(c) || "([{\"'`\u{201c}\u{2018}".contains(c))
    }

    /// `http://…`, `https://…`, `ftp://…`; trailing sentence punctuation is not part of it.
    fn url(&self, i: usize) -> Option<Match> {
        let mut j = i;
        while j - i <= 5 && self.at(j).is_some_and(|c| c.is_ascii_alphabetic()) {
            j += 1;
        }
        if self.at(j) != Some(':') {
            return None;
        }
        let scheme = self.text(i, j).to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ftp") {
            return None;
        }
        if !(self.at(j + 1) == Some('/') && self.at(j + 2) == Some('/')) {
            return None;
        }
        j += 3;
        let body_start = j;
        while self.at(j).is_some_and(|c| c.is_ascii_alphanumeric() || "-._~:/?#@!$&*+,;=%".contains(c)) {
            j += 1;
        }
        while j > body_start && ".,;:!?".contains(self.chars[j - 1]) {
            j -= 1;
        }
        (j > body_start).then(|| Match::single(j, self.text(i, j)))
    }

    /// `name@host.domain`.
    fn email(&self, i: usize) -> Option<Match> {
        if !self.at(i).is_some_and(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let mut j = i;
        while self.at(j).is_some_and(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c)) {
            j += 1;
        }
        if self.at(j) != Some('@') {
            return None;
        }
        j += 1;
        let mut labels = 0;
        loop {
            let label_start = j;
            while self.at(j).is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
                j += 1;
            }
            if j == label_start {
                return None;
            }
            labels += 1;
            if self.at(j) == Some('.') && self.at(j + 1).is_some_and(|c| c.is_ascii_alphanumeric()) {
                j += 1;
            } else {
                break;
            }
        }
        (labels >= 2).then(|| Match::single(j, self.text(i, j)))
    }

    /// A whole number followed by a space and a fraction (`22 3/4`) is one token; the lexer
    /// turns the space inside a token into U+00A0.
    fn fraction(&self, i: usize) -> Option<Match> {
        let digits = |mut j: usize| {
            let start = j;
            while self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            (j > start).then_some(j)
        };
        let whole_end = digits(i)?;
        let mut j = whole_end;
        while self.at(j).is_some_and(|c| c == ' ' || c == '\u{a0}') {
            j += 1;
        }
        if j == whole_end {
            return None;
        }
        let numerator_start = j;
        let numerator_end = digits(j)?;
        if self.at(numerator_end) != Some('/') {
            return None;
        }
        let end = digits(numerator_end + 1)?;
        if self.at(end).is_some_and(|c| is_word_char(c) || c == '/') {
            return None;
        }
        let token = format!("{}\u{a0}{}", self.text(i, whole_end), self.text(numerator_start, end));
        Some(Match::single(end, token))
    }

    /// Emoticons such as `:)` or `;-(`, standing alone; their brackets are escaped like any
    /// bracket (`:)` becomes `:-rrb-`).
    fn smiley(&self, i: usize) -> Option<Match> {
        if !self.at_token_start_strict(i) || !matches!(self.at(i), Some(':' | ';' | '=')) {
            return None;
        }
        let mut j = i + 1;
        if self.at(j) == Some('-') {
            j += 1;
        }
        if !self.at(j).is_some_and(|c| "()[]DPp".contains(c)) {
            return None;
        }
        j += 1;
        if self.at(j).is_some_and(is_word_char) {
            return None;
        }
        let token: String = self.chars[i..j].iter().map(|&c| escape_bracket(c).unwrap_or_else(|| c.to_string())).collect();
        Some(Match::single(j, token))
    }

    /// Like [`Self::at_token_start`] but only after a space or at the start of the line.
    fn at_token_start_strict(&self, i: usize) -> bool {
        i == 0 || is_lexer_space(self.chars[i - 1])
    }

    /// `&amp;`, `&lt;`, `&gt;` are decoded; `<tag>` is one token; `<` directly before a word
    /// stays attached to it (`a<b` gives `a <b`).
    fn sgml_or_entity(&self, i: usize) -> Option<Match> {
        match self.at(i)? {
            '&' => {
                for (entity, decoded) in [("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")] {
                    let len = entity.chars().count();
                    if i + len <= self.chars.len() && self.text(i, i + len) == entity {
                        return Some(Match::single(i + len, decoded));
                    }
                }
                None
            }
            '<' => {
                let first = self.at(i + 1)?;
                if first.is_ascii_alphabetic() || first == '/' {
                    let mut j = i + 1;
                    while self.at(j).is_some_and(|c| c != '>' && c != '<' && !is_lexer_space(c)) {
                        j += 1;
                    }
                    if self.at(j) == Some('>') {
                        return Some(Match::single(j + 1, self.text(i, j + 1)));
                    }
                }
                if is_word_char(first) {
                    let mut j = i + 1;
                    while self.at(j).is_some_and(is_word_char) {
                        j += 1;
                    }
                    return Some(Match::single(j, self.text(i, j)));
                }
                None
            }
            _ => None,
        }
    }

    /// Plain numbers: `1,000`, `5:30`, `3.14`, `.5`. (`5:30pm` is `5:30` then `pm`: the colon
    /// only joins digits inside a number, never inside a word.)
    fn number(&self, i: usize) -> Option<Match> {
        let mut j = i;
        if self.at(j) == Some('.') {
            j += 1;
        }
        let digits_start = j;
        while self.at(j).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
        }
        if j == digits_start {
            return None;
        }
        while matches!(self.at(j), Some('.' | ',' | ':')) && self.at(j + 1).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
            while self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
        }
        Some(Match::single(j, self.text(i, j)))
    }

    /// Words: letters and digits joined by `-`, `.`, `_`, `/`, `&` or an apostrophe when a
    /// letter or digit follows (`well-known`, `bathroom.with`, `and/or`, `AT&T`, `o'clock`),
    /// then clitics split off and an abbreviation's period kept.
    fn word(&self, i: usize) -> Option<Match> {
        if !self.at(i).is_some_and(|c| is_word_char(c) && !is_combining_mark(c)) {
            return None;
        }
        let mut j = i;
        loop {
            let run_start = j;
            while self.at(j).is_some_and(is_word_char) {
                j += 1;
            }
            // `&` joins capitals only: `AT&T`, `R&D`, `B&W` stay whole, `at&t`, `b&w` split.
            if self.at(j) == Some('&') && !self.capitals_around_ampersand(run_start, j) {
                break;
            }
            let joins = self.at(j).is_some_and(|c| "-._/&'\u{2019}".contains(c))
                && self
                    .at(j + 1)
                    .is_some_and(|c| is_word_char(c) && !is_combining_mark(c))
                // `rock'n'roll` is `rock 'n' roll`.
                && !self.is_quoted_n(j);
            if !joins {
                break;
            }
            j += 1;
        }
        let word: Vec<char> = self.chars[i..j].to_vec();
        let next = self.at(j);

        // `c++`, `c#`: a lone letter keeps these suffixes (but `#1` is `# 1`).
        if word.len() == 1 && word[0].is_alphabetic() {
            let suffix_len = if next == Some('+') && self.at(j + 1) == Some('+') {
                2
            } else if next == Some('#') {
                1
            } else {
                0
            };
            if suffix_len > 0 && !self.at(j + suffix_len).is_some_and(is_word_char) {
                return Some(Match::single(j + suffix_len, self.text(i, j + suffix_len)));
            }
        }
        // `a>b` gives `a>` then `b`.
        if next == Some('>') && self.at(j + 1).is_some_and(is_word_char) {
            return Some(Match::single(j + 1, self.text(i, j + 1)));
        }

        let mut tokens = split_clitics(&word);
        let mut end = j;
        match next {
            // Dropped-g forms keep their apostrophe: `dunkin'`, `nothin'` (but `dogs'` is `dogs '`).
            Some('\'' | '\u{2019}')
                if ends_with_ignore_case(&word, "in") && word.len() >= 3 && !self.at(j + 1).is_some_and(is_word_char) =>
            {
                tokens.last_mut().expect("a word has a token").push('\'');
                end = j + 1;
            }
            Some('.') if self.period_belongs_to_word(&word, j) => {
                tokens.last_mut().expect("a word has a token").push('.');
                end = j + 1;
            }
            _ => {}
        }
        Some(Match { end, tokens })
    }

    /// Whether the run `from..amp` before the `&` at `amp`, and the run after it, are all
    /// capital letters.
    fn capitals_around_ampersand(&self, from: usize, amp: usize) -> bool {
        let capitals = |range: &[char]| !range.is_empty() && range.iter().all(|c| c.is_uppercase());
        let mut end = amp + 1;
        while self.at(end).is_some_and(is_word_char) {
            end += 1;
        }
        capitals(&self.chars[from..amp]) && capitals(&self.chars[amp + 1..end])
    }

    /// Whether `'n'` starts at `i` (either apostrophe, either case).
    fn is_quoted_n(&self, i: usize) -> bool {
        let apostrophe = |c: Option<char>| matches!(c, Some('\'' | '\u{2019}'));
        apostrophe(self.at(i)) && matches!(self.at(i + 1), Some('n' | 'N')) && apostrophe(self.at(i + 2))
    }

    /// Whether the `.` at `dot` after `word` is part of it (`st.`, `u.s.`, `a.`) rather than a
    /// sentence-final period.
    fn period_belongs_to_word(&self, word: &[char], dot: usize) -> bool {
        let after = self.at(dot + 1);
        if after == Some('.') {
            // `shrub..` is `shrub . .`; `machine...` is `machine ...`.
            return false;
        }
        if is_initialism(word) {
            // A lone capital letter at the very end of a line reads as the end of a sentence
            // (`... reads K.` gives `k .`), and so does the pronoun (`lying I. The` gives
            // `i . the`); elsewhere it is an initial (`W. Centre`, `a.`).
            let lone_capital = word.len() == 1 && word[0].is_uppercase();
            let line_ends = self.chars[dot + 1..].iter().all(|&c| is_lexer_space(c) || is_untokenizable(c));
            let sentence_end = lone_capital && (line_ends || word[0] == 'I');
            return !sentence_end || matches!(after, Some(',' | ';' | ':'));
        }
        let lower: String = word.iter().collect::<String>().to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return true;
        }
        // A period directly followed by sentence-internal punctuation cannot end a sentence:
        // `trash can.;` gives `can. ;`, `phone.,` gives `phone. ,`.
        matches!(after, Some(',' | ';' | ':')) && word.iter().any(|c| c.is_alphabetic())
    }

    /// Everything else: quotes, brackets, dashes, ellipses, runs of `?`/`!`, and single symbols.
    fn punctuation(&self, i: usize) -> Option<Match> {
        let c = self.chars[i];
        let run_end = |set: &str| {
            let mut j = i;
            while self.at(j).is_some_and(|c| set.contains(c)) {
                j += 1;
            }
            j
        };
        let m = match c {
            '.' => {
                let end = run_end(".");
                if end - i >= 3 { Match::single(end, "...") } else { Match::single(i + 1, ".") }
            }
            '\u{2026}' => Match::single(i + 1, "..."),
            '-' => {
                let end = run_end("-");
                if end - i >= 2 { Match::single(end, "--") } else { Match::single(i + 1, "-") }
            }
            '\u{2012}'..='\u{2015}' => Match::single(i + 1, "--"),
            '?' | '!' => {
                let end = run_end("?!");
                Match::single(end, self.text(i, end))
            }
            '"' | '\u{201c}' | '\u{201d}' | '\u{201e}' => {
                // A straight quote opens when it starts a token and something follows it
                // (`reads " Please` has a closing quote).
                let opening = match c {
                    '\u{201c}' | '\u{201e}' => true,
                    '\u{201d}' => false,
                    _ => self.at_token_start(i) && self.at(i + 1).is_some_and(|n| !is_lexer_space(n)),
                };
                Match::single(i + 1, if opening { "``" } else { "''" })
            }
            '`' | '\u{2018}' => {
                if self.at(i + 1) == Some(c) {
                    Match::single(i + 2, "``")
                } else {
                    Match::single(i + 1, "`")
                }
            }
            '\'' | '\u{2019}' => self.apostrophe(i),
            '(' | ')' | '[' | ']' | '{' | '}' => Match::single(i + 1, escape_bracket(c).expect("a bracket")),
            '\u{a2}' => Match::single(i + 1, "cents"),
            '\u{a3}' => Match::single(i + 1, "#"),
            '\u{a4}' | '\u{a5}' | '\u{20ac}' => Match::single(i + 1, "$"),
            _ => match vulgar_fraction(c) {
                Some(ascii) => Match::single(i + 1, ascii),
                None => Match::single(i + 1, c.to_string()),
            },
        };
        Some(m)
    }

    /// An apostrophe outside a word: a detached clitic (`dog 's`), a doubled closing quote
    /// (`''`), or a single quote, opening (`` ` ``) or closing (`'`).
    fn apostrophe(&self, i: usize) -> Match {
        // `'n'` (`rock 'n' roll`, `slip 'n' slide`) is one token, and so is `'n` before a
        // non-word character (`rock 'n roll`).
        if self.is_quoted_n(i) {
            return Match::single(i + 3, format!("'{}'", self.text(i + 1, i + 2)));
        }
        if self.at(i + 1).is_some_and(|c| c == 'n' || c == 'N') && !self.at(i + 2).is_some_and(is_word_char) {
            return Match::single(i + 2, format!("'{}", self.text(i + 1, i + 2)));
        }
        for clitic in ["ll", "re", "ve", "s", "m", "d"] {
            let len = clitic.len();
            let matches = (0..len).all(|k| self.at(i + 1 + k).is_some_and(|c| c.to_ascii_lowercase() == clitic.as_bytes()[k] as char));
            if matches && !self.at(i + 1 + len).is_some_and(is_word_char) {
                return Match::single(i + 1 + len, format!("'{}", self.text(i + 1, i + 1 + len)));
            }
        }
        if matches!(self.at(i + 1), Some('\'' | '\u{2019}')) {
            return Match::single(i + 2, "''");
        }
        // Opening only before a letter: `'MT'` gives `` ` mt ' `` but `'2'` gives `' 2 '`.
        let opening = self.at_token_start(i) && self.at(i + 1).is_some_and(char::is_alphabetic);
        Match::single(i + 1, if opening { "`" } else { "'" })
    }
}

/// Splits English clitics and the PTB's special contractions off a word:
/// `don't` → `do n't`, `cat's` → `cat 's`, `cannot` → `can not`, `gonna` → `gon na`,
/// `y'all` → `y' all`. Curly apostrophes become ASCII ones, as the lexer normalises quotes.
fn split_clitics(word: &[char]) -> Vec<String> {
    let text: String = word.iter().map(|&c| if c == '\u{2019}' { '\'' } else { c }).collect();
    let lower = text.to_lowercase();
    let split_at = |at: usize| vec![text[..at].to_string(), text[at..].to_string()];
    match lower.as_str() {
        "cannot" => return split_at(3),
        "gonna" | "wanna" | "gotta" | "lemme" | "gimme" => return split_at(3),
        "y'all" => return split_at(2),
        _ => {}
    }
    // Byte offsets: the clitics are ASCII, and lower-casing ASCII keeps byte lengths.
    if lower.len() > 3 && lower.ends_with("n't") && text.is_char_boundary(text.len() - 3) {
        return split_at(text.len() - 3);
    }
    for clitic in ["'s", "'m", "'d", "'ll", "'re", "'ve"] {
        if lower.len() > clitic.len() && lower.ends_with(clitic) && text.is_char_boundary(text.len() - clitic.len()) {
            return split_at(text.len() - clitic.len());
        }
    }
    vec![text]
}

fn ends_with_ignore_case(word: &[char], suffix: &str) -> bool {
    let suffix: Vec<char> = suffix.chars().collect();
    word.len() >= suffix.len() && word[word.len() - suffix.len()..].iter().zip(&suffix).all(|(a, b)| a.to_lowercase().eq(b.to_lowercase()))
}

/// Single letters separated by periods: `a`, `u.s`, `t.v`, `e.g`, `p.m` (the final period is
/// not part of `word`).
fn is_initialism(word: &[char]) -> bool {
    word.iter().enumerate().all(|(k, &c)| if k % 2 == 0 { c.is_alphabetic() } else { c == '.' }) && word.len() % 2 == 1
}

fn escape_bracket(c: char) -> Option<String> {
    let escaped = match c {
        '(' => "-lrb-",
        ')' => "-rrb-",
        '[' => "-lsb-",
        ']' => "-rsb-",
        '{' => "-lcb-",
        '}' => "-rcb-",
        _ => return None,
    };
    Some(escaped.to_string())
}

fn vulgar_fraction(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{bc}' => "1/4",
        '\u{bd}' => "1/2",
        '\u{be}' => "3/4",
        '\u{2150}' => "1/7",
        '\u{2151}' => "1/9",
        '\u{2152}' => "1/10",
        '\u{2153}' => "1/3",
        '\u{2154}' => "2/3",
        '\u{2155}' => "1/5",
        '\u{2156}' => "2/5",
        '\u{2157}' => "3/5",
        '\u{2158}' => "4/5",
        '\u{2159}' => "1/6",
        '\u{215a}' => "5/6",
        '\u{215b}' => "1/8",
        '\u{215c}' => "3/8",
        '\u{215d}' => "5/8",
        '\u{215e}' => "7/8",
        _ => return None,
    })
}

fn is_word_char(c: char) -> bool {
    (c.is_alphanumeric() && vulgar_fraction(c).is_none()) || is_combining_mark(c)
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}' | '\u{fe20}'..='\u{fe2f}')
}

/// Spaces for the lexer: Unicode white space (line breaks never reach a line) plus the
/// zero-width space and the byte-order mark.
fn is_lexer_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}'
}

/// Characters the Java lexer deletes: everything outside the Basic Multilingual Plane (the
/// lexer works on UTF-16 units and no rule matches a surrogate) and control characters. Also
/// deleted here, as a guess without evidence: invisible format characters (soft hyphen,
/// zero-width joiners, direction marks, variation selectors), which would otherwise become
/// invisible one-character tokens.
fn is_untokenizable(c: char) -> bool {
    c > '\u{ffff}'
        || (c.is_control() && !c.is_whitespace())
        || matches!(c, '\u{ad}' | '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{fe00}'..='\u{fe0f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptb(line: &str) -> String {
        ptb_tokenize_line(line).join(" ")
    }

    #[test]
    fn ampersand_joins_capitals_only() {
        assert_eq!(ptb("AT&T phone"), "at&t phone");
        assert_eq!(ptb("at&t phone"), "at & t phone");
        assert_eq!(ptb("At&T phone"), "at & t phone");
        assert_eq!(ptb("B&W photo"), "b&w photo");
        assert_eq!(ptb("b&w photo"), "b & w photo");
        assert_eq!(ptb("A1&B x"), "a1 & b x");
        assert_eq!(ptb("1&2"), "1 & 2");
    }

    #[test]
    fn quoted_n_is_one_token() {
        assert_eq!(ptb("slip 'n' slide"), "slip 'n' slide");
        assert_eq!(ptb("Rock'n'Roll"), "rock 'n' roll");
        assert_eq!(ptb("rock 'n'roll"), "rock 'n' roll");
        assert_eq!(ptb("rock 'n roll"), "rock 'n roll");
        assert_eq!(tokenize_caption("A boy on a Slip 'n' Slide ."), "a boy on a slip 'n' slide");
        assert_eq!(tokenize_caption("rock n' roll"), "rock n roll");
    }

    #[test]
    fn clitics_and_contractions() {
        assert_eq!(ptb("I don't think the cat's bed cannot"), "i do n't think the cat 's bed can not");
        assert_eq!(ptb("gonna wanna gotta lemme ain't y'all"), "gon na wan na got ta lem me ai n't y' all");
        assert_eq!(ptb("the 1990's o'clock dogs' toys"), "the 1990 's o'clock dogs ' toys");
        assert_eq!(ptb("Dunkin' Donuts"), "dunkin' donuts");
    }

    #[test]
    fn quotes_brackets_and_symbols() {
        assert_eq!(ptb("\"x\" 'y' (a) [b] {c}"), "`` x '' ` y ' -lrb- a -rrb- -lsb- b -rsb- -lcb- c -rcb-");
        assert_eq!(ptb("$5.00 10% #1 a*b c++ c# AT&T &amp; 3/4"), "$ 5.00 10 % # 1 a * b c++ c# at&t & 3/4");
        assert_eq!(ptb("5:30pm what?! really?? yes!!!"), "5:30 pm what ?! really ?? yes !!!");
        assert_eq!(ptb("a<b a>b :)"), "a <b a> b :-rrb-");
    }

    #[test]
    fn periods() {
        assert_eq!(ptb("Mr. Smith went to the U.S. on a t.v. show."), "mr. smith went to the u.s. on a t.v. show .");
        assert_eq!(ptb("a trash can.; shrub.. end..."), "a trash can. ; shrub . . end ...");
        assert_eq!(ptb("reads K."), "reads k .");
        assert_eq!(ptb("a."), "a.");
        assert_eq!(ptb("bathroom.with .5 5. .NET"), "bathroom.with .5 5 . . net");
    }

    #[test]
    fn unicode() {
        assert_eq!(ptb("café — “fancy” … ½ 😀x"), "café -- `` fancy '' ... 1/2 x");
        assert_eq!(ptb("22 3/4 st"), "22\u{a0}3/4 st");
    }

    /// Every example of SPEC.md §1, raw caption to PTB line.
    #[test]
    fn spec_examples() {
        let examples = [
            ("don't", "do n't"),
            ("cat's", "cat 's"),
            ("I'm", "i 'm"),
            ("they'll", "they 'll"),
            ("cannot", "can not"),
            ("gonna wanna gotta lemme", "gon na wan na got ta lem me"),
            ("ain't", "ai n't"),
            ("y'all", "y' all"),
            ("1990's", "1990 's"),
            ("o'clock", "o'clock"),
            ("dogs'", "dogs '"),
            ("\"x\"", "`` x ''"),
            ("'x'", "` x '"),
            ("\u{201c}x\u{201d} \u{2018}y\u{2019}", "`` x '' ` y '"),
            ("( [ {", "-lrb- -lsb- -lcb-"),
            (":)", ":-rrb-"),
            ("&amp; &lt;", "& <"),
            ("a<b", "a <b"),
            ("a>b", "a> b"),
            ("well-known t-shirt 1,000 3/4 50/50 and/or 5.00 3.14 .5", "well-known t-shirt 1,000 3/4 50/50 and/or 5.00 3.14 .5"),
            ("foo@bar.com http://x.org AT&T c++ c# 2x4", "foo@bar.com http://x.org at&t c++ c# 2x4"),
            ("mr. st. u.s. t.v. etc. e.g. p.m. a. i.", "mr. st. u.s. t.v. etc. e.g. p.m. a. i."),
            ("5:30pm $5.00 10% #1 a*b", "5:30 pm $ 5.00 10 % # 1 a * b"),
            ("5.", "5 ."),
            (".NET c- -b a\\b", ". net c - - b a \\ b"),
            ("!!! ?? ?! & $ # / % * = + | \\", "!!! ?? ?! & $ # / % * = + | \\"),
            ("\u{2026} \u{2014} \u{bd} \u{e9}", "... -- 1/2 \u{e9}"),
            ("a\u{1F600}b c\u{1c}d\u{1d}e\u{1e}f", "a b c d e f"),
            ("a\u{a0}b\u{200b}c\u{feff}d\te", "a b c d e"),
            ("colour", "colour"),
        ];
        for (raw, want) in examples {
            assert_eq!(ptb(raw), want, "PTB tokens of {raw:?}");
        }
    }

    #[test]
    fn final_tokens() {
        assert_eq!(tokenize_caption("A man (in a hat) -- don't touch!"), "a man -lrb- in a hat -rrb- do n't touch");
        assert_eq!(tokenize_caption("..."), "");
        assert_eq!(tokenize_words("on 22 3/4 street."), ["on", "22", "3/4", "street"]);
    }

    #[test]
    fn line_breaks_shift_later_captions() {
        let captions = ["one\rtwo", "three", "four"];
        assert_eq!(tokenize_captions(&captions), ["one", "two", "three"]);
        assert_eq!(count_extra_line_breaks(&captions), 1);
        let plain = ["a\nb", "c"];
        assert_eq!(tokenize_captions(&plain), ["a b", "c"]);
        assert_eq!(count_extra_line_breaks(&plain), 0);
        assert_eq!(tokenize_captions(&["", "x", "\r\n"]), ["", "x", ""]);
    }
}
