//! The PTB tokenizer against real CoreNLP 3.4.1 output: 50,000 COCO captions and every
//! reference and candidate of the three scoring fixtures.

mod common;

use std::io::{BufRead, BufReader};

use caption_eval::tokenizer::{ptb_tokenize_line, tokenize_caption, tokenize_captions};
use flate2::read::GzDecoder;
use serde::Deserialize;

#[derive(Deserialize)]
struct SampleLine {
    raw: String,
    ptb: String,
    tok: String,
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn final_tokens_match_on_50000_coco_captions() {
    let gz = common::read_fixture("ptb_tokenizer_sample.jsonl.gz");
    let mut total = 0;
    let mut mismatches = Vec::new();
    let mut ptb_differences = 0;
    let mut ptb_exact = 0;
    for line in BufReader::new(GzDecoder::new(&gz[..])).lines() {
        let line = line.expect("readable gzip");
        let sample: SampleLine = serde_json::from_str(&line).expect("a JSON line");
        total += 1;
        let ours = tokenize_caption(&sample.raw);
        if ours != sample.tok {
            mismatches.push(format!("raw {:?}\n  want {:?}\n  got  {:?}", sample.raw, sample.tok, ours));
        }
        // The Java lexer sometimes adds a `.` after a line-final abbreviation depending on the
        // next line; compare the raw PTB lines without such lone periods.
        let strip = |s: &str| s.split(' ').filter(|t| *t != ".").collect::<Vec<_>>().join(" ");
        let line_text = sample.raw.replace('\n', " ");
        if ptb_tokenize_line(&line_text).join(" ") == sample.ptb.trim_end() {
            ptb_exact += 1;
        }
        if strip(&ptb_tokenize_line(&line_text).join(" ")) != strip(&sample.ptb) {
            ptb_differences += 1;
            if std::env::var_os("SHOW_PTB_DIFFS").is_some() {
                eprintln!("PTB {:?}\n  want {:?}\n  got  {:?}", sample.raw, sample.ptb, ptb_tokenize_line(&line_text).join(" "));
            }
        }
    }
    assert_eq!(total, 50_000, "the sample holds 50,000 captions");
    eprintln!(
        "final tokens: {} of {total} match; raw PTB lines: {ptb_exact} identical, {ptb_differences} differ beyond lone periods",
        total - mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {total} captions differ:\n{}",
        mismatches.len(),
        mismatches.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn scoring_fixture_captions_tokenize_as_in_pycocoevalcap() {
    for name in common::SCORING_FIXTURES {
        let fixture = common::scoring_fixture(name);
        // pycocoevalcap tokenizes all references in one run and all candidates in another.
        let refs_raw: Vec<&str> = fixture.ordered().flat_map(|(_, img)| img.refs_raw.iter().map(String::as_str)).collect();
        let refs_want: Vec<&str> = fixture.ordered().flat_map(|(_, img)| img.refs_tok.iter().map(String::as_str)).collect();
        let cands_raw: Vec<&str> = fixture.ordered().map(|(_, img)| img.cand_raw.as_str()).collect();
        let cands_want: Vec<&str> = fixture.ordered().map(|(_, img)| img.cand_tok.as_str()).collect();
        let mut mismatches = Vec::new();
        for (raw, want, got) in itertools(&refs_raw, &refs_want, &tokenize_captions(&refs_raw)).chain(itertools(
            &cands_raw,
            &cands_want,
            &tokenize_captions(&cands_raw),
        )) {
            if want != got {
                mismatches.push(format!("raw {raw:?}\n  want {want:?}\n  got  {got:?}"));
            }
        }
        assert!(mismatches.is_empty(), "{name}: {} captions differ:\n{}", mismatches.len(), mismatches.join("\n"));
    }
}

fn itertools<'a>(raw: &'a [&'a str], want: &'a [&'a str], got: &'a [String]) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
    assert_eq!(raw.len(), got.len());
    raw.iter().zip(want).zip(got).map(|((r, w), g)| (*r, *w, g.as_str()))
}
