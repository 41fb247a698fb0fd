//! Flickr8k / Flickr30k captions: `Flickr8k.token.txt` (`name.jpg#k<TAB>caption`) or
//! Flickr30k's `results.csv` (`image_name| comment_number| comment`), with one list file of
//! image names per split (`Flickr_8k.trainImages.txt`, ...).

use super::{file_stem_id, read_text};
use crate::error::{DataError, Result};
use crate::sample::{Sample, Split};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Copy)]
pub struct FlickrExtras {
    /// Images with captions that no split list names.
    pub not_in_any_split: usize,
    /// Names in a split list that have no captions.
    pub listed_without_captions: usize,
}

/// Captions per image file name, in file order (`#0` .. `#4`).
fn read_captions(path: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = read_text(path)?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut order: Vec<String> = Vec::new();
    let mut by_image: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let parsed = if is_csv {
            if index == 0 && line.starts_with("image_name") {
                continue;
            }
            parse_csv_line(line)
        } else {
            parse_token_line(line)
        };
        let (name, k, caption) = parsed.map_err(|message| DataError::Line { path: path.to_path_buf(), line: line_no, message })?;
        let entry = by_image.entry(name.clone()).or_insert_with(|| {
            order.push(name);
            Vec::new()
        });
        entry.push((k, caption));
    }
    Ok(order
        .into_iter()
        .map(|name| {
            let mut caps = by_image.remove(&name).unwrap_or_default();
            caps.sort_by_key(|(k, _)| *k);
            (name, caps.into_iter().map(|(_, c)| c).collect())
        })
        .collect())
}

/// `1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ...`
fn parse_token_line(line: &str) -> std::result::Result<(String, usize, String), String> {
    let (key, caption) = line.split_once('\t').ok_or("expected `<image>#<k><TAB><caption>` but found no tab")?;
    let (name, k) = key.rsplit_once('#').ok_or_else(|| format!("expected `<image>#<k>` before the tab, found {key:?}"))?;
    let k = k.trim().parse().map_err(|_| format!("caption number {k:?} is not a number"))?;
    Ok((name.trim().to_string(), k, caption.trim().to_string()))
}

/// `1000092795.jpg| 0| Two young guys with shaggy hair ...`. The released file has a row
/// whose second `|` is missing (`2199200615.jpg| 4 A dog runs ...`); it is read as intended.
fn parse_csv_line(line: &str) -> std::result::Result<(String, usize, String), String> {
    let mut parts = line.splitn(3, '|');
    let name = parts.next().unwrap_or_default().trim();
    let (k, caption) = match (parts.next(), parts.next()) {
        (Some(k), Some(caption)) => (k.trim().to_string(), caption.trim().to_string()),
        (Some(rest), None) => {
            let rest = rest.trim();
            let (k, caption) = rest.split_once(' ').ok_or("expected `image_name| comment_number| comment`")?;
            (k.to_string(), caption.trim().to_string())
        }
        _ => return Err("expected `image_name| comment_number| comment`".into()),
    };
    if name.is_empty() {
        return Err("empty image name".into());
    }
    let k = k.parse().map_err(|_| format!("comment_number {k:?} is not a number"))?;
    Ok((name.to_string(), k, caption))
}

fn read_list(path: &Path) -> Result<Vec<String>> {
    Ok(read_text(path)?.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// Loads captions and assigns splits from the list files. With no list at all every image is train.
pub fn load(captions_file: &Path, images_dir: &Path, split_lists: &[(Split, PathBuf)]) -> Result<(Vec<Sample>, FlickrExtras)> {
    let captions = read_captions(captions_file)?;
    let mut extras = FlickrExtras::default();
    let mut listed_names: HashSet<String> = HashSet::new();
    let mut listed: Vec<(Split, String)> = Vec::new();
    for (split, list) in split_lists {
        for name in read_list(list)? {
            listed_names.insert(name.clone());
            listed.push((*split, name));
        }
    }
    let mut samples = Vec::with_capacity(captions.len());
    if split_lists.is_empty() {
        for (name, caps) in captions {
            samples.push(sample(&name, caps, images_dir, Split::Train));
        }
        return Ok((samples, extras));
    }
    // List order defines sample order, so a split reads the same as its list file.
    let mut by_name: HashMap<String, Vec<String>> = HashMap::with_capacity(captions.len());
    for (name, caps) in captions {
        if listed_names.contains(&name) {
            by_name.insert(name, caps);
        } else {
            extras.not_in_any_split += 1;
        }
    }
    // An image may be named by several lists: reporting on dev means the val and test lists are
    // the same file, and each split must then get every image.
    for (split, name) in listed {
        match by_name.get(&name) {
            Some(caps) => samples.push(sample(&name, caps.clone(), images_dir, split)),
            None => extras.listed_without_captions += 1,
        }
    }
    Ok((samples, extras))
}

fn sample(name: &str, captions: Vec<String>, images_dir: &Path, split: Split) -> Sample {
    Sample { image_id: file_stem_id(name), file_name: name.to_string(), image_path: images_dir.join(name), captions, split }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_parse() {
        let (name, k, cap) = parse_token_line("1000268201_693b08cb0e.jpg#3\tA girl .").unwrap();
        assert_eq!((name.as_str(), k, cap.as_str()), ("1000268201_693b08cb0e.jpg", 3, "A girl ."));
        assert!(parse_token_line("no tab here").is_err());
        assert!(parse_token_line("x.jpg#a\tcap").unwrap_err().contains("not a number"));
    }

    #[test]
    fn csv_lines_parse_including_the_known_broken_row() {
        let (n, k, c) = parse_csv_line("1000092795.jpg| 0| Two young guys .").unwrap();
        assert_eq!((n.as_str(), k, c.as_str()), ("1000092795.jpg", 0, "Two young guys ."));
        let (n, k, c) = parse_csv_line("2199200615.jpg| 4 A dog runs across the grass .").unwrap();
        assert_eq!((n.as_str(), k, c.as_str()), ("2199200615.jpg", 4, "A dog runs across the grass ."));
        assert!(parse_csv_line("just text").is_err());
    }

    #[test]
    fn an_image_named_by_two_lists_is_in_both_splits() {
        let dir = std::env::temp_dir().join(format!("caption-flickr-lists-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join("tokens.txt");
        std::fs::write(&tokens, "a.jpg#0\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tA cow .\n").unwrap();
        std::fs::write(dir.join("train.txt"), "a.jpg\n").unwrap();
        std::fs::write(dir.join("dev.txt"), "b.jpg\n").unwrap();
        let lists = [(Split::Train, dir.join("train.txt")), (Split::Val, dir.join("dev.txt")), (Split::Test, dir.join("dev.txt"))];
        let (samples, extras) = load(&tokens, &dir, &lists).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<(Split, &str)> = samples.iter().map(|s| (s.split, s.file_name.as_str())).collect();
        assert_eq!(names, [(Split::Train, "a.jpg"), (Split::Val, "b.jpg"), (Split::Test, "b.jpg")]);
        assert_eq!(samples[2].captions, ["A cat ."]);
        assert_eq!((extras.not_in_any_split, extras.listed_without_captions), (1, 0));
    }
}
