//! The real loaders on the real Flickr8k and MS-COCO files from the shared folder.

mod common;

use caption_data::{CaptionDataset, DataConfig, DataFormat, Split, SplitSource};

fn list(path: std::path::PathBuf) -> Option<SplitSource> {
    Some(SplitSource { list: Some(path), ..Default::default() })
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn flickr8k_train_and_dev_load_and_missing_test_images_are_reported() {
    let root = common::shared_dir().join("data/flickr8k");
    let config = DataConfig {
        format: DataFormat::Flickr,
        annotations: Some(root.join("Flickr8k.token.txt")),
        images: Some(root.join("Images")),
        train: list(root.join("Flickr_8k.trainImages.txt")),
        val: list(root.join("Flickr_8k.devImages.txt")),
        test: list(root.join("Flickr_8k.testImages.txt")),
        ..Default::default()
    };
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!(dataset.count(Split::Train), 6000);
    assert_eq!(dataset.count(Split::Val), 1000);
    assert_eq!(dataset.count(Split::Test), 0);
    assert!(dataset.samples.iter().all(|s| s.captions.len() == 5));
    let report = &dataset.report;
    assert_eq!(report.missing_images, 1000);
    assert_eq!(report.missing_by_split, vec![(Split::Test, 1000)]);
    assert_eq!(report.unreadable_images, 0);
    // 8,092 captioned images, 8,000 of them in a split list.
    assert_eq!(report.not_in_any_split, 92);
    assert!(!report.problems.is_empty() && report.problems[0].contains("not found"));
    let first = dataset.split(Split::Train).next().unwrap();
    assert_eq!(first.image_id, "2513260012_03d33305cf");
    assert!(first.image_path.is_file());
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn flickr8k_with_on_missing_error_names_the_missing_files() {
    let root = common::shared_dir().join("data/flickr8k");
    let config = DataConfig {
        format: DataFormat::Flickr,
        annotations: Some(root.join("Flickr8k.token.txt")),
        images: Some(root.join("Images")),
        test: list(root.join("Flickr_8k.testImages.txt")),
        on_missing: caption_data::OnMissing::Error,
        check_images: caption_data::ImageCheck::Exists,
        ..Default::default()
    };
    let message = CaptionDataset::load(&config).unwrap_err().to_string();
    assert!(message.starts_with("1000 image(s)"), "{message}");
    assert!(message.contains(".jpg: not found"), "{message}");
}

#[test]
#[cfg_attr(not(shared_data), ignore = "needs the shared data folder (../shared or CAPTION_SHARED_DIR), absent when built")]
fn coco_mini_loads_80_images_and_400_captions() {
    let root = common::shared_dir().join("data/coco-mini");
    let config = DataConfig {
        format: DataFormat::Coco,
        train: Some(SplitSource {
            annotations: Some(root.join("annotations/captions_train2017.json")),
            images: Some(root.join("train2017")),
            list: None,
        }),
        check_images: caption_data::ImageCheck::Decode,
        ..Default::default()
    };
    let dataset = CaptionDataset::load(&config).unwrap();
    assert_eq!(dataset.count(Split::Train), 80);
    assert_eq!(dataset.samples.iter().map(|s| s.captions.len()).sum::<usize>(), 400);
    assert!(dataset.report.is_clean(), "{}", dataset.report);
    assert!(dataset.samples.iter().all(|s| s.image_id.parse::<u64>().is_ok()));
}
