//! Previews of dataset files, from their bytes: what a person sees before training on one. Pure
//! (no I/O but the reader given), so the fuzz target `dataset_preview` runs it as the
//! coordinator does (`fuzz/src/dataset.rs` includes this file).

use std::io::Read;

use kiln_proto::dataset::{DatasetPreview, IdxFile};

/// Rows of a CSV shown in its preview.
pub const PREVIEW_ROWS: usize = 5;
/// Characters of a text file shown in its preview.
pub const PREVIEW_CHARS: usize = 400;
/// How much of a file the CSV and text previews read.
pub const PREVIEW_BYTES: u64 = 64 * 1024;
/// At most this many files in an IDX archive.
pub const MAX_IDX_FILES: usize = 16;

/// `bytes` as UTF-8, forgiving a character cut at the end of the sample.
fn utf8_prefix(bytes: &[u8]) -> Result<&str, String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) if e.error_len().is_none() => {
            Ok(std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default())
        }
        Err(e) => Err(format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        )),
    }
}

/// A CSV file's header and first rows, from its first bytes (a row cut at the end is left out).
pub fn csv(bytes: &[u8]) -> Result<DatasetPreview, String> {
    let text = utf8_prefix(bytes)?;
    if text.trim().is_empty() {
        return Err("the file is empty; a CSV dataset needs a header row and data rows".into());
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?
        .iter()
        .map(|c| c.trim().to_string())
        .collect();
    if columns.iter().all(String::is_empty) {
        return Err("the header row has no column names".into());
    }
    let mut rows = Vec::new();
    for record in reader.records().take(PREVIEW_ROWS) {
        match record {
            Ok(r) => rows.push(r.iter().map(str::to_string).collect()),
            // The sample may end inside a row.
            Err(_) => break,
        }
    }
    Ok(DatasetPreview::Csv { columns, rows })
}

/// A text file's first characters.
pub fn text(bytes: &[u8]) -> Result<DatasetPreview, String> {
    let text = utf8_prefix(bytes)?;
    if text.trim().is_empty() {
        return Err("the file is empty".into());
    }
    Ok(DatasetPreview::Text {
        head: text.chars().take(PREVIEW_CHARS).collect(),
    })
}

/// An IDX folder travels as a tar archive of its files (`name[.gz]`, each an IDX file).
pub fn idx(archive: impl Read) -> Result<DatasetPreview, String> {
    let mut archive = tar::Archive::new(archive);
    let mut files = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("it is not a tar archive of IDX files: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("it is not a tar archive of IDX files: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| format!("an entry has an unreadable name: {e}"))?
            .to_string_lossy()
            .into_owned();
        if name.contains('/') || name.starts_with('.') {
            return Err(format!(
                "entry `{name}`: the archive must hold IDX files at its top level"
            ));
        }
        if files.len() == MAX_IDX_FILES {
            return Err(format!("more than {MAX_IDX_FILES} files"));
        }
        let shape = if name.ends_with(".gz") {
            idx_shape(&mut flate2::read::GzDecoder::new(&mut entry))
        } else {
            idx_shape(&mut entry)
        }
        .map_err(|e| format!("entry `{name}`: {e}"))?;
        files.push(IdxFile { name, shape });
    }
    if files.is_empty() {
        return Err("the archive holds no files".into());
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(DatasetPreview::Idx { files })
}

/// The dimensions from an IDX header: `0 0 <type> <ndims>`, then `ndims` big-endian u32.
fn idx_shape(reader: &mut dyn Read) -> Result<Vec<u32>, String> {
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| "too short for an IDX header".to_string())?;
    if magic[0] != 0
        || magic[1] != 0
        || !matches!(magic[2], 0x08 | 0x09 | 0x0B | 0x0C | 0x0D | 0x0E)
    {
        return Err("not an IDX file (bad magic number)".into());
    }
    let ndims = usize::from(magic[3]);
    if ndims == 0 || ndims > 4 {
        return Err(format!(
            "an IDX file with {ndims} dimensions; allowed: 1 to 4"
        ));
    }
    let mut shape = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        let mut dim = [0u8; 4];
        reader
            .read_exact(&mut dim)
            .map_err(|_| "the IDX header is cut short".to_string())?;
        shape.push(u32::from_be_bytes(dim));
    }
    Ok(shape)
}
