//! Prints SPICE-rb's tuples for captions given on the command line (or stdin, one a line).
//!
//! ```text
//! cargo run --release -p caption-eval --example spice_parse -- "a man riding a horse"
//! ```
//! METEOR's data is found as `Meteor::locate` finds it, else in `target/meteor-data`.

use std::io::BufRead;
use std::path::PathBuf;

use caption_eval::spice::Spice;
use caption_eval::tokenizer::tokenize_caption;

fn main() {
    let spice = Spice::locate(None).or_else(|_| Spice::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/meteor-data")));
    let spice = spice.unwrap_or_else(|e| panic!("{e}"));
    let mut captions: Vec<String> = std::env::args().skip(1).collect();
    if captions.is_empty() {
        captions = std::io::stdin().lock().lines().map_while(Result::ok).collect();
    }
    for caption in captions {
        let tokens = tokenize_caption(&caption);
        let tuples: Vec<String> = spice.parse(&tokens).iter().map(ToString::to_string).collect();
        println!("{tokens}\n  tags:   {}\n  tuples: {}", spice.explain(&tokens), tuples.join(" "));
    }
}
