use std::io::Write;

use super::*;
use kiln_proto::spec::DatasetSpec;

fn idx_bytes(kind_dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, kind_dims.len() as u8];
    for d in kind_dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

/// A tiny IDX "MNIST": `n` 2×2 images whose label is the image index mod 3.
fn tiny_mnist(n: usize) -> MemorySource {
    let images: Vec<u8> = (0..n * 4).map(|i| (i % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    MemorySource::default()
        .with("d/train-images-idx3-ubyte", idx_bytes(&[n, 2, 2], &images))
        .with(
            "d/train-labels-idx1-ubyte.gz",
            gzip(&idx_bytes(&[n], &labels)),
        )
}

fn idx_spec(fraction: f64) -> DatasetSpec {
    DatasetSpec::Idx {
        path: "d".into(),
        validation_fraction: fraction,
        limit: None,
    }
}

fn err_text(spec: &DatasetSpec, source: &dyn DataSource) -> String {
    load(spec, 1, source).expect_err("should fail").to_string()
}

#[test]
fn idx_raw_and_gzip_load_the_same() {
    let data = load(&idx_spec(0.0), 1, &tiny_mnist(10)).expect("loads");
    assert_eq!(data.train.len(), 10);
    assert_eq!(data.info.input_shape, vec![1, 2, 2]);
    let Targets::Class(labels) = &data.train.targets else {
        panic!("class targets")
    };
    assert_eq!(labels[..4], [0, 1, 2, 0]);
    let Inputs::Dense { values, .. } = &data.train.inputs else {
        panic!("dense")
    };
    assert!((values[5] - 5.0 / 255.0).abs() < 1e-7);
}

#[test]
fn bad_idx_files_give_clear_errors() {
    let good_labels = idx_bytes(&[4], &[0, 1, 2, 0]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (idx_bytes(&[4, 2, 2], &[0; 10]), "truncated"),
        (
            vec![0x12, 0x34, 0x08, 0x03, 0, 0, 0, 1],
            "wrong magic number",
        ),
        (vec![0, 0], "shorter than the 4-byte header"),
        (vec![0, 0, 0x0D, 3], "element type 0x0d"),
        (vec![0, 0, 0x08, 3, 0, 0, 0, 4], "truncated header"),
        (
            gzip(&idx_bytes(&[4, 2, 2], &[0; 16]))[..20].to_vec(),
            "gzip data is corrupt",
        ),
        (idx_bytes(&[4, 4], &[0; 16]), "3 dimensions"),
        (idx_bytes(&[3, 2, 2], &[0; 12]), "3 labels for"),
    ];
    for (images, needle) in cases {
        let (images, labels) = if needle == "3 labels for" {
            (idx_bytes(&[4, 2, 2], &[0; 16]), idx_bytes(&[3], &[0, 1, 2]))
        } else {
            (images, good_labels.clone())
        };
        let source = MemorySource::default()
            .with("d/train-images-idx3-ubyte", images)
            .with("d/train-labels-idx1-ubyte", labels);
        let text = err_text(&idx_spec(0.0), &source);
        assert!(text.contains(needle), "expected {needle:?} in: {text}");
        assert!(text.contains("d/train-"), "error names the file: {text}");
    }
}

#[test]
fn missing_idx_files_are_named() {
    let text = err_text(&idx_spec(0.0), &MemorySource::default());
    assert!(text.contains("d/train-images-idx3-ubyte"), "{text}");
    let only_images =
        MemorySource::default().with("d/train-images-idx3-ubyte", idx_bytes(&[1, 2, 2], &[0; 4]));
    let text = err_text(&idx_spec(0.0), &only_images);
    assert!(text.contains("train-labels-idx1-ubyte"), "{text}");
}

#[test]
fn validation_split_is_deterministic_and_disjoint() {
    let a = load(&idx_spec(0.2), 7, &tiny_mnist(50)).expect("loads");
    let b = load(&idx_spec(0.2), 7, &tiny_mnist(50)).expect("loads");
    let c = load(&idx_spec(0.2), 8, &tiny_mnist(50)).expect("loads");
    assert_eq!(a.train.len(), 40);
    assert_eq!(a.valid.as_ref().map(Dataset::len), Some(10));
    assert_eq!(a.valid, b.valid, "same seed, same split");
    assert_ne!(a.valid, c.valid, "another seed, another split");
    // Every image is distinct here (its first pixel is 4 * index mod 256 for n < 64): the
    // splits must not share one.
    let firsts = |d: &Dataset| -> Vec<u32> {
        let Inputs::Dense { values, .. } = &d.inputs else {
            panic!()
        };
        values
            .chunks(4)
            .map(|c| (c[0] * 255.0).round() as u32)
            .collect()
    };
    let train = firsts(&a.train);
    assert!(
        firsts(a.valid.as_ref().unwrap())
            .iter()
            .all(|v| !train.contains(v))
    );
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let o = epoch_order(100, 3, 0);
    let mut sorted = o.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(o, epoch_order(100, 3, 0));
    assert_ne!(o, epoch_order(100, 3, 1));
    assert_ne!(o, epoch_order(100, 4, 0));
}

/// Rank `rank`'s batches for the rest of an epoch from `consumed`, as its own loop takes them:
/// it computes the order itself from the shared seed.
fn shard(
    n: usize,
    seed: u64,
    consumed: usize,
    batch: usize,
    rank: usize,
    world: usize,
) -> Vec<Vec<usize>> {
    let order = epoch_order(n, seed, 1);
    let mut consumed = consumed;
    let mut batches = Vec::new();
    while steps_left_in_epoch(n, consumed, batch, world) > 0 {
        let (indices, taken) = replica_batch(&order, consumed, batch, rank, world);
        batches.push(indices);
        consumed += taken;
    }
    batches
}

/// With equal seeds the ranks' shards of an epoch are disjoint, their union is the epoch, and
/// every rank takes the same number of steps (uneven sizes included); world 1 is plain batches
/// of the epoch order, the last one short.
#[test]
fn replica_shards_partition_the_epoch() {
    for n in [1, 7, 101, 192, 203] {
        for batch in [1, 5, 16] {
            let order = epoch_order(n, 3, 1);
            let alone = shard(n, 3, 0, batch, 0, 1);
            let plain: Vec<Vec<usize>> = order.chunks(batch).map(<[usize]>::to_vec).collect();
            assert_eq!(alone, plain, "n {n}, batch {batch}");
            for world in 1..=4usize {
                if n < world {
                    assert_eq!(steps_left_in_epoch(n, 0, batch, world), 0);
                    continue;
                }
                let shards: Vec<_> = (0..world)
                    .map(|rank| shard(n, 3, 0, batch, rank, world))
                    .collect();
                let steps = steps_left_in_epoch(n, 0, batch, world);
                let mut all = Vec::new();
                for (rank, batches) in shards.iter().enumerate() {
                    let what = format!("n {n}, batch {batch}, rank {rank} of {world}");
                    assert_eq!(batches.len(), steps, "{what}");
                    assert!(
                        batches
                            .iter()
                            .all(|b| !b.is_empty() && b.len() <= batch + 1),
                        "{what}"
                    );
                    all.extend(batches.iter().flatten().copied());
                }
                assert_eq!(
                    all.len(),
                    n,
                    "disjoint: n {n}, batch {batch}, world {world}"
                );
                all.sort();
                assert_eq!(
                    all,
                    (0..n).collect::<Vec<_>>(),
                    "union: n {n}, world {world}"
                );
            }
        }
    }
}

/// Steps consume a prefix of the order, so after `k` steps at one world size another world
/// size shards exactly the rest (only a tail shorter than the new world is skipped).
#[test]
fn another_world_size_goes_on_with_the_rest_of_the_epoch() {
    let (n, batch) = (203, 5);
    let order = epoch_order(n, 3, 1);
    for before in 1..=4usize {
        for after in 1..=4usize {
            for k in [0, 1, 7] {
                let mut consumed = 0;
                for _ in 0..k {
                    consumed += replica_batch(&order, consumed, batch, 0, before).1;
                }
                assert_eq!(consumed, k * batch * before);
                let mut rest: Vec<usize> = (0..after)
                    .flat_map(|rank| shard(n, 3, consumed, batch, rank, after))
                    .flatten()
                    .collect();
                rest.sort();
                let mut expected = order[consumed..].to_vec();
                expected.sort();
                assert_eq!(
                    rest, expected,
                    "{k} steps at world {before}, then world {after}"
                );
            }
        }
    }
}

fn csv_spec(label: &str, task: kiln_proto::spec::CsvTask) -> DatasetSpec {
    DatasetSpec::Csv {
        path: "t.csv".into(),
        label_column: label.into(),
        task,
        validation_fraction: 0.0,
    }
}

#[test]
fn csv_classification_and_regression() {
    let text = "a,b,species\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,emu\n";
    let source = MemorySource::default().with("t.csv", text.as_bytes().to_vec());
    let d = load(
        &csv_spec("species", kiln_proto::spec::CsvTask::Classification),
        1,
        &source,
    )
    .expect("loads");
    assert_eq!(d.info.outputs, 3);
    assert_eq!(d.info.labels, vec!["cat", "dog", "emu"]);
    assert_eq!(d.train.targets, Targets::Class(vec![0, 1, 0, 2]));
    let d = load(
        &csv_spec("b", kiln_proto::spec::CsvTask::Regression),
        1,
        &MemorySource::default().with("t.csv", b"a,b\n1,2\n3,4.5\n".to_vec()),
    )
    .expect("loads");
    assert_eq!(d.train.targets, Targets::Value(vec![2.0, 4.5]));
}

#[test]
fn a_csv_keeps_what_a_new_row_needs() {
    // The label in the middle: the columns are the features in input order, and the kept
    // standardisation turns a raw row into exactly the model's input for it.
    let text = "a,species,b\n1,cat,20\n3,dog,40\n5,cat,60\n7,emu,80\n";
    let source = MemorySource::default().with("t.csv", text.as_bytes().to_vec());
    let d = load(
        &csv_spec("species", kiln_proto::spec::CsvTask::Classification),
        1,
        &source,
    )
    .expect("loads");
    assert_eq!(d.info.columns, vec!["a", "b"]);
    let stats = d.info.standardise.clone().expect("kept");
    assert_eq!(stats.mean, vec![4.0, 50.0]);
    let Inputs::Dense { values, .. } = &d.train.inputs else {
        panic!("dense inputs")
    };
    let mut rows: Vec<Vec<f32>> = values.chunks(2).map(<[f32]>::to_vec).collect();
    rows.sort_by(|x, y| x[0].total_cmp(&y[0]));
    assert_eq!(
        stats.apply(&[1.0, 20.0]).as_deref(),
        Some(rows[0].as_slice())
    );
    assert_eq!(
        stats.apply(&[7.0, 80.0]).as_deref(),
        Some(rows[3].as_slice())
    );
    assert_eq!(stats.apply(&[1.0]), None, "a row of another width");
    // And it travels as `data.json` (serde_json's float parsing may move the last bit).
    let json = serde_json::to_string(&d.info).expect("serializes");
    let back: DataInfo = serde_json::from_str(&json).expect("parses");
    assert_eq!(
        (&back.columns, &back.labels),
        (&d.info.columns, &d.info.labels)
    );
    let back_stats = back.standardise.expect("kept");
    for (x, y) in back_stats.std.iter().zip(&stats.std) {
        assert!((x - y).abs() <= y * 1e-12, "{x} vs {y}");
    }
}

#[test]
fn bad_csv_gives_clear_errors() {
    use kiln_proto::spec::CsvTask::*;
    let cases: &[(&str, &str, kiln_proto::spec::CsvTask, &str)] = &[
        (
            "a,b\n1,x\n2,y\n",
            "label",
            Classification,
            "\"label\" is not a column; the columns are: a, b",
        ),
        (
            "a,b\n1,x\nq,y\n",
            "b",
            Classification,
            "line 3, column \"a\": \"q\" is not a number",
        ),
        ("a,b\n1,x\n2,x\n", "b", Classification, "1 distinct value"),
        ("a,b\n1,x\n", "b", Classification, "1 data rows"),
        (
            "b\nx\ny\n",
            "b",
            Classification,
            "at least one feature column",
        ),
        (
            "a,b\n1,2\n2,z\n",
            "b",
            Regression,
            "\"z\" is not a number (task = regression)",
        ),
        ("a,b\n1,2\n2\n", "b", Regression, "line 3"),
        ("a,b\n1,2\ninf,3\n", "b", Regression, "not a finite number"),
        ("", "b", Classification, "t.csv: the file is empty"),
        ("\n  \r\n", "b", Regression, "t.csv: the file is empty"),
    ];
    for (text, label, task, needle) in cases {
        let source = MemorySource::default().with("t.csv", text.as_bytes().to_vec());
        let err = err_text(&csv_spec(label, *task), &source);
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(err.contains("t.csv"), "names the file: {err}");
    }
}

#[test]
fn text_loads_and_windows() {
    let spec = DatasetSpec::Text {
        path: "t.txt".into(),
        validation_fraction: 0.25,
    };
    let source = MemorySource::default().with("t.txt", b"abcabcabcabcabcab".to_vec());
    let splits = load(&spec, 1, &source).expect("loads");
    assert_eq!(splits.info.outputs, 3);
    let splits = text_windows(splits, 4, 0.25).expect("windows");
    // 17 chars: 13 train tokens -> 3 windows of 4 (+1 target), 4 valid tokens -> none of 5.
    assert_eq!(splits.train.len(), 3);
    assert!(splits.valid.is_none());
    let Inputs::Tokens { values, len } = &splits.train.inputs else {
        panic!()
    };
    let Targets::Tokens { values: t, .. } = &splits.train.targets else {
        panic!()
    };
    assert_eq!(
        (*len, &values[..4], &t[..4]),
        (4, &[0, 1, 2, 0][..], &[1, 2, 0, 1][..])
    );
}

#[test]
fn bad_text_gives_clear_errors() {
    let spec = DatasetSpec::Text {
        path: "t.txt".into(),
        validation_fraction: 0.1,
    };
    for (bytes, needle) in [
        (b"".to_vec(), "empty"),
        (b"  \n\n ".to_vec(), "empty"),
        (vec![0xff, 0xfe, 0x41], "not UTF-8"),
    ] {
        let err = err_text(&spec, &MemorySource::default().with("t.txt", bytes));
        assert!(err.contains(needle) && err.contains("t.txt"), "{err}");
    }
    let err = err_text(&spec, &MemorySource::default());
    assert!(err.contains("not found"), "{err}");
    let splits = load(
        &spec,
        1,
        &MemorySource::default().with("t.txt", b"short".to_vec()),
    )
    .unwrap();
    let err = text_windows(splits, 64, 0.1)
        .expect_err("too short")
        .to_string();
    assert!(err.contains("model.context = 64"), "{err}");
}

#[test]
fn synthetic_is_seeded() {
    let spec = DatasetSpec::Synthetic {
        examples: 40,
        features: 3,
        classes: 4,
        validation_fraction: 0.0,
    };
    let a = load(&spec, 1, &MemorySource::default()).unwrap();
    let b = load(&spec, 1, &MemorySource::default()).unwrap();
    let c = load(&spec, 2, &MemorySource::default()).unwrap();
    assert_eq!(a.train, b.train);
    assert_ne!(a.train, c.train);
    assert_eq!(a.info.outputs, 4);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn committed_mnist_subset_loads() {
    let dir = format!("{}/../../data/mnist", env!("CARGO_MANIFEST_DIR"));
    let spec = DatasetSpec::Idx {
        path: dir,
        validation_fraction: 0.1,
        limit: None,
    };
    let d = load(&spec, 42, &FsSource).expect("the committed subset loads");
    assert_eq!(
        d.train.len() + d.valid.as_ref().map_or(0, Dataset::len),
        2000
    );
    assert_eq!(d.test.as_ref().map(Dataset::len), Some(500));
    assert_eq!(d.info.outputs, 10);
}
