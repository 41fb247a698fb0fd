//! Karpathy split JSON and Flickr30k `results.csv`, on small files written in the real schemas.

use caption_data::{CaptionDataset, DataConfig, DataFormat, Split, SplitSource};
use std::path::Path;

fn write_png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30])).save(path).unwrap();
}

/// Three images of `dataset_coco.json` as Karpathy released it (fields trimmed to the schema).
const KARPATHY_COCO: &str = r#"{"dataset": "coco", "images": [
 {"filepath": "val2014", "sentids": [1, 2], "filename": "COCO_val2014_000000391895.jpg", "imgid": 0,
  "split": "test", "sentences": [
   {"tokens": ["a", "man", "with", "a", "red", "helmet"], "raw": "A man with a red helmet on a small moped on a dirt road. ", "imgid": 0, "sentid": 1},
   {"tokens": ["man", "riding", "a", "motor", "bike"], "raw": "Man riding a motor bike on a dirt road on the countryside.", "imgid": 0, "sentid": 2}],
  "cocoid": 391895},
 {"filepath": "val2014", "sentids": [3], "filename": "COCO_val2014_000000522418.jpg", "imgid": 1,
  "split": "restval", "sentences": [
   {"tokens": ["a", "woman", "cutting", "a", "cake"], "raw": "A woman wearing a net on her head cutting a cake. ", "imgid": 1, "sentid": 3}],
  "cocoid": 522418},
 {"filepath": "train2014", "sentids": [4], "filename": "COCO_train2014_000000318556.jpg", "imgid": 2,
  "split": "train", "sentences": [
   {"tokens": ["a", "very", "clean", "bathroom"], "raw": "A very clean and well decorated empty bathroom", "imgid": 2, "sentid": 4}],
  "cocoid": 318556}
]}"#;

#[test]
fn karpathy_coco_splits_with_restval_folded_into_train() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dataset_coco.json"), KARPATHY_COCO).unwrap();
    for f in ["val2014/COCO_val2014_000000391895.jpg", "val2014/COCO_val2014_000000522418.jpg", "train2014/COCO_train2014_000000318556.jpg"]
    {
        // PNG bytes under a .jpg name: loaders trust the content, not the extension.
        write_png(&dir.path().join("images").join(f));
    }
    let mut config = DataConfig {
        format: DataFormat::Karpathy,
        annotations: Some(dir.path().join("dataset_coco.json")),
        images: Some(dir.path().join("images")),
        ..Default::default()
    };
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!((dataset.count(Split::Train), dataset.count(Split::Val), dataset.count(Split::Test)), (2, 0, 1));
    let test = dataset.split(Split::Test).next().unwrap();
    assert_eq!(test.image_id, "391895");
    assert_eq!(test.captions.len(), 2);
    assert_eq!(test.captions[0], "A man with a red helmet on a small moped on a dirt road. ");
    assert!(dataset.report.is_clean(), "{}", dataset.report);

    config.restval_to_train = false;
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!(dataset.count(Split::Train), 1);
    assert_eq!(dataset.report.restval_dropped, 1);
}

#[test]
fn karpathy_flickr_without_filepath_uses_the_file_stem_as_id() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"images": [{"sentids": [0], "imgid": 0, "split": "val", "filename": "1000092795.jpg",
      "sentences": [{"tokens": ["two", "young", "guys"], "raw": "Two young guys with shaggy hair .", "imgid": 0, "sentid": 0}]}],
      "dataset": "flickr30k"}"#;
    std::fs::write(dir.path().join("dataset_flickr30k.json"), json).unwrap();
    let config = DataConfig {
        format: DataFormat::Karpathy,
        annotations: Some(dir.path().join("dataset_flickr30k.json")),
        images: Some(dir.path().join("flickr30k-images")),
        ..Default::default()
    };
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!(dataset.samples.len(), 0);
    assert_eq!(dataset.report.missing_images, 1);
    assert!(dataset.report.problems[0].contains("1000092795.jpg: not found"));
    write_png(&dir.path().join("flickr30k-images/1000092795.jpg"));
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!(dataset.samples[0].image_id, "1000092795");
    assert_eq!(dataset.samples[0].split, Split::Val);
}

#[test]
fn karpathy_unknown_split_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dataset.json");
    std::fs::write(&path, r#"{"images": [{"filename": "a.jpg", "split": "holdout", "sentences": [{"raw": "x", "tokens": ["x"]}]}]}"#)
        .unwrap();
    let config =
        DataConfig { format: DataFormat::Karpathy, annotations: Some(path), images: Some(dir.path().into()), ..Default::default() };
    let message = CaptionDataset::load(&config).unwrap_err().to_string();
    assert!(message.contains("dataset.json") && message.contains("images[0].split is \"holdout\""), "{message}");
}

/// The head of Flickr30k's `results.csv` as Kaggle distributes it, including its one known
/// broken row (`| 4 A dog...` without the second separator).
const FLICKR30K_CSV: &str = "image_name| comment_number| comment
1000092795.jpg| 0| Two young guys with shaggy hair look at their hands while hanging out in the yard .
1000092795.jpg| 1| Two young , White males are outside near many bushes .
10002456.jpg| 0| Several men in hard hats are operating a giant pulley system .
10002456.jpg| 1| Workers look down from up above on a piece of equipment .
2199200615.jpg| 0| A dog runs across the grass .
2199200615.jpg| 4 A dog runs across the grass .
";

#[test]
fn flickr30k_results_csv_with_split_lists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.csv"), FLICKR30K_CSV).unwrap();
    std::fs::write(dir.path().join("train.txt"), "1000092795.jpg\n10002456.jpg\n").unwrap();
    std::fs::write(dir.path().join("test.txt"), "2199200615.jpg\nnot_captioned.jpg\n").unwrap();
    for f in ["1000092795.jpg", "10002456.jpg", "2199200615.jpg"] {
        write_png(&dir.path().join("flickr30k_images").join(f));
    }
    let list = |f: &str| Some(SplitSource { list: Some(dir.path().join(f)), ..Default::default() });
    let config = DataConfig {
        format: DataFormat::Flickr,
        annotations: Some(dir.path().join("results.csv")),
        images: Some(dir.path().join("flickr30k_images")),
        train: list("train.txt"),
        test: list("test.txt"),
        check_images: caption_data::ImageCheck::Decode,
        ..Default::default()
    };
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!(dataset.count(Split::Train), 2);
    let test: Vec<_> = dataset.split(Split::Test).collect();
    assert_eq!(test.len(), 1);
    assert_eq!(test[0].captions, vec!["A dog runs across the grass .", "A dog runs across the grass ."]);
    assert_eq!(dataset.report.listed_without_captions, 1);
}
