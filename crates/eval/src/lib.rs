//! Caption metrics that give the same numbers as pycocoevalcap 1.2, without Java.

pub mod tokenizer;
