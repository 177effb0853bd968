//! The check behind the fuzz target `dataset_preview`: a dataset upload's bytes through the
//! preview the coordinator shows for it (`coordinator/src/dataset/preview.rs`, included as
//! `super::preview` by the target and by the coordinator's corpus test). None may panic on any
//! input, and what it accepts must be within the preview's limits.

use kiln_proto::dataset::DatasetPreview;

use super::preview;

/// The first byte picks the kind (CSV, text, an IDX archive); the rest is the file. The
/// coordinator reads at most [`preview::PREVIEW_BYTES`] of a CSV or text file, so the check
/// does too.
pub fn dataset_preview(data: &[u8]) {
    let [kind, file @ ..] = data else {
        return;
    };
    let head = &file[..file.len().min(preview::PREVIEW_BYTES as usize)];
    let result = match kind % 3 {
        0 => preview::csv(head),
        1 => preview::text(head),
        _ => preview::idx(file),
    };
    let preview = match result {
        Ok(preview) => preview,
        Err(why) => return assert!(!why.is_empty(), "an error that says nothing"),
    };
    match &preview {
        DatasetPreview::Csv { columns, rows } => {
            assert!(kind % 3 == 0);
            assert!(!columns.is_empty());
            assert!(rows.len() <= preview::PREVIEW_ROWS, "{} rows", rows.len());
        }
        DatasetPreview::Text { head } => {
            assert!(kind % 3 == 1);
            assert!(!head.is_empty());
            assert!(head.chars().count() <= preview::PREVIEW_CHARS);
        }
        DatasetPreview::Idx { files } => {
            assert!(kind % 3 == 2);
            assert!(!files.is_empty() && files.len() <= preview::MAX_IDX_FILES);
            assert!(files.windows(2).all(|w| w[0].name <= w[1].name), "sorted");
            for f in files {
                assert!(
                    !f.name.contains('/') && !f.name.starts_with('.'),
                    "{}",
                    f.name
                );
                assert!((1..=4).contains(&f.shape.len()), "{:?}", f.shape);
            }
        }
    }
    // The coordinator stores and serves the preview as JSON.
    let json = serde_json::to_string(&preview).expect("a preview serializes");
    let back: DatasetPreview = serde_json::from_str(&json).expect("a preview reads back");
    assert_eq!(back, preview);
}
