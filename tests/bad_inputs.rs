//! The bad-input corpus: each broken file must give exactly one readable error line that names
//! the file, a non-zero exit status, and never a panic.

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

/// Runs `caption` expecting failure; returns its one error line.
fn fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_caption")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "expected a clean failure, got {:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn coco_json(file_name: &str) -> String {
    format!(
        r#"{{"images": [{{"id": 1, "file_name": "{file_name}", "width": 8, "height": 8}}],
        "annotations": [{{"id": 10, "image_id": 1, "caption": "a red square"}}]}}"#
    )
}

fn coco_stats(dir: &Path, annotations: &str) -> String {
    let annotations = dir.join(annotations);
    fails(&["data", "stats", "--format", "coco", "--annotations", annotations.to_str().unwrap(), "--images", dir.to_str().unwrap()])
}

/// A YAML config that loads `annotations` as COCO and fails on any bad image.
fn strict_config(dir: &Path, annotations: &str) -> String {
    let path = dir.join(format!("{annotations}.yaml"));
    let text = format!(
        "data:\n  format: coco\n  train:\n    annotations: {}\n    images: {}\n  on_missing: error\n  check_images: decode\n",
        dir.join(annotations).display(),
        dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn malformed_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.json"), r#"{"images": [{"id": 1, "file_name": "a.jpg"},"#).unwrap();
    let err = coco_stats(dir.path(), "broken.json");
    assert!(err.contains("broken.json") && err.contains("not valid JSON"), "{err}");
    assert!(err.contains("line 1 column"), "{err}");
}

#[test]
fn missing_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nocaption.json"),
        r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 3, "image_id": 1}]}"#,
    )
    .unwrap();
    let err = coco_stats(dir.path(), "nocaption.json");
    assert!(err.contains("nocaption.json") && err.contains("missing field `caption`"), "{err}");
}

#[test]
fn unknown_yaml_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "name: typo\ndata:\n  format: coco\n  on_mising: skip\n").unwrap();
    let err = fails(&["config", "check", path.to_str().unwrap()]);
    assert!(err.contains("typo.yaml:4:"), "line and column: {err}");
    assert!(err.contains("data: unknown field `on_mising`, expected one of"), "{err}");
    assert!(err.contains("`on_missing`"), "the allowed keys are listed: {err}");
}

#[test]
fn truncated_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let mut jpeg = Vec::new();
    let photo = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
    photo.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    jpeg.truncate(jpeg.len() / 2);
    std::fs::write(dir.path().join("truncated.jpg"), &jpeg).unwrap();
    std::fs::write(dir.path().join("captions.json"), coco_json("truncated.jpg")).unwrap();
    let err = fails(&["data", "stats", "--config", &strict_config(dir.path(), "captions.json")]);
    assert!(err.contains("truncated.jpg: "), "{err}");
    assert!(err.contains("on_missing"), "says what to do: {err}");
}

/// CRC-32 (IEEE), for writing a well-formed PNG chunk.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn png_header_claiming_100000_by_100000_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        png.extend((data.len() as u32).to_be_bytes());
        png.extend(&body);
        png.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend(100_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    // The start of a zlib stream of zeros, as a real bomb would carry (it would go on for MBs).
    chunk(b"IDAT", &[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00, 0xc2, 0xa0]);
    chunk(b"IEND", &[]);
    std::fs::write(dir.path().join("bomb.png"), &png).unwrap();
    std::fs::write(dir.path().join("captions.json"), coco_json("bomb.png")).unwrap();
    let err = fails(&["data", "stats", "--config", &strict_config(dir.path(), "captions.json")]);
    assert!(err.contains("bomb.png: header says 100000x100000"), "{err}");
    assert!(err.contains("max_pixels"), "{err}");
}

#[test]
fn non_utf8_caption_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = b"a.jpg#0\tA dog runs .\n".to_vec();
    text.extend(b"a.jpg#1\tA caf\xe9 by the river .\n"); // Latin-1 e-acute
    std::fs::write(dir.path().join("Flickr8k.token.txt"), &text).unwrap();
    std::fs::write(dir.path().join("train.txt"), "a.jpg\n").unwrap();
    let err = fails(&[
        "data",
        "stats",
        "--format",
        "flickr",
        "--annotations",
        dir.path().join("Flickr8k.token.txt").to_str().unwrap(),
        "--images",
        dir.path().to_str().unwrap(),
        "--train-list",
        dir.path().join("train.txt").to_str().unwrap(),
    ]);
    assert!(err.contains("Flickr8k.token.txt: line 2: not valid UTF-8"), "{err}");
}

#[test]
fn missing_config_file() {
    let err = fails(&["config", "check", "/nonexistent/dir/config.yaml"]);
    assert!(err.contains("/nonexistent/dir/config.yaml"), "{err}");
}
