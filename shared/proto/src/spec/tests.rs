use super::*;

const BASE: &str = r#"
name = "t"
[model]
kind = "mlp"
[dataset]
kind = "synthetic"
"#;

/// Parse `BASE` with `extra` appended to the table named in `table` (or top level).
fn spec_with(table: &str, extra: &str) -> String {
    if table.is_empty() {
        // Top-level keys must come before the first table.
        format!("{extra}\n{BASE}")
    } else if BASE.contains(&format!("[{table}]")) {
        BASE.replace(&format!("[{table}]\n"), &format!("[{table}]\n{extra}\n"))
    } else {
        format!("{BASE}\n[{table}]\n{extra}\n")
    }
}

fn fields_of(text: &str) -> Vec<String> {
    match JobSpec::from_toml_str(text) {
        Ok(_) => vec![],
        Err(SpecError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
        Err(SpecError::Parse { message, .. }) => vec![format!("parse: {message}")],
    }
}

#[test]
fn base_spec_is_valid_and_defaults_are_sane() {
    let spec = JobSpec::from_toml_str(BASE).expect("base spec");
    assert_eq!(spec.training.batch_size, 64);
    assert_eq!(spec.optimizer.kind, OptimizerKind::Adam);
    assert_eq!(spec.device, DeviceRequest::Auto);
    assert_eq!(spec.seed, 42);
}

#[test]
fn each_bad_value_is_reported_at_its_field() {
    // (table, extra lines, expected field path)
    let cases: &[(&str, &str, &str)] = &[
        ("", "seed = 1\nmax_attempts = 0", "max_attempts"),
        ("training", "batch_size = 0", "training.batch_size"),
        ("training", "epochs = 0", "training.epochs"),
        ("training", "max_steps = 0", "training.max_steps"),
        ("training", "eval_every = 0", "training.eval_every"),
        (
            "training",
            "checkpoint_every = 0",
            "training.checkpoint_every",
        ),
        ("training", "log_every = 0", "training.log_every"),
        ("distributed", "workers = 0", "distributed.workers"),
        ("distributed", "workers = 65", "distributed.workers"),
        (
            "distributed",
            "workers = 2\nmin_workers = 3",
            "distributed.min_workers",
        ),
        ("distributed", "min_workers = 0", "distributed.min_workers"),
        (
            "distributed",
            "sync = { every = 0 }",
            "distributed.sync.every",
        ),
        (
            "distributed",
            "gang_wait_s = 99999999",
            "distributed.gang_wait_s",
        ),
        (
            "distributed",
            "sync = { every = 8, outer_lr = 0.0 }",
            "distributed.sync.outer_lr",
        ),
        (
            "training",
            "grad_clip = { norm = -1.0 }",
            "training.grad_clip.norm",
        ),
        (
            "training",
            "grad_clip = { value = 0.0 }",
            "training.grad_clip.value",
        ),
        ("optimizer", "lr = 0.0", "optimizer.lr"),
        ("optimizer", "lr = -1e-3", "optimizer.lr"),
        ("optimizer", "lr = 1e9", "optimizer.lr"),
        ("optimizer", "weight_decay = 2.0", "optimizer.weight_decay"),
        ("optimizer", "momentum = 0.9", "optimizer.momentum"),
        (
            "optimizer",
            "kind = \"sgd\"\nmomentum = 1.5",
            "optimizer.momentum",
        ),
        ("optimizer", "beta1 = 1.0", "optimizer.beta1"),
        ("optimizer", "beta2 = -0.1", "optimizer.beta2"),
        ("optimizer", "epsilon = 0.0", "optimizer.epsilon"),
        (
            "schedule",
            "kind = \"step\"\nstep_size = 0\ngamma = 0.5",
            "schedule.step_size",
        ),
        (
            "schedule",
            "kind = \"step\"\nstep_size = 10\ngamma = 2.0",
            "schedule.gamma",
        ),
        (
            "schedule",
            "kind = \"cosine\"\nmin_lr = 1.0",
            "schedule.min_lr",
        ),
        ("model", "dropout = 1.0", "model.dropout"),
        ("model", "hidden = [0]", "model.hidden"),
        (
            "dataset",
            "validation_fraction = 0.9",
            "dataset.validation_fraction",
        ),
        ("dataset", "classes = 1", "dataset.classes"),
        ("dataset", "examples = 1", "dataset.examples"),
        ("dataset", "features = 0", "dataset.features"),
    ];
    for (table, extra, field) in cases {
        let text = spec_with(table, extra);
        let fields = fields_of(&text);
        assert_eq!(
            fields,
            vec![field.to_string()],
            "spec with `{extra}` in [{table}] should fail at exactly {field}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
name = "bad name!"
[model]
kind = "charlm"
d_model = 30
heads = 4
[dataset]
kind = "synthetic"
classes = 0
[optimizer]
lr = -1.0
[training]
batch_size = 0
"#;
    let fields = fields_of(text);
    for expected in [
        "name",
        "model.heads",
        "dataset.kind",
        "dataset.classes",
        "optimizer.lr",
        "training.batch_size",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} missing from {fields:?}"
        );
    }
}

#[test]
fn errors_name_value_and_allowed() {
    let err = JobSpec::from_toml_str(&spec_with("training", "batch_size = 0")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("training.batch_size"), "{text}");
    assert!(text.contains("got 0"), "{text}");
    assert!(text.contains("1 to 65536"), "{text}");
}

#[test]
fn unknown_fields_and_kinds_are_parse_errors_naming_them() {
    let cases: &[(&str, &str, &str)] = &[
        ("training", "batchsize = 3", "batchsize"),
        ("model", "layers = 3", "layers"),
        ("", "devise = \"cpu\"", "devise"),
        ("", "device = \"tpu\"", "tpu"),
        ("optimizer", "kind = \"lbfgs\"", "lbfgs"),
        ("training", "batch_size = \"big\"", "batch_size"),
    ];
    for (table, extra, needle) in cases {
        let text = spec_with(table, extra);
        match JobSpec::from_toml_str(&text) {
            Err(SpecError::Parse { message, .. }) => {
                assert!(message.contains(needle), "`{extra}`: {message}")
            }
            other => panic!("`{extra}` should be a parse error, got {other:?}"),
        }
    }
}

#[test]
fn model_and_dataset_must_fit_together() {
    let text = BASE.replace(
        "kind = \"mlp\"",
        "kind = \"cnn\"\nconv = [{ channels = 8 }]",
    );
    assert_eq!(fields_of(&text), vec!["dataset.kind"]);
    let text = BASE.replace("kind = \"mlp\"", "kind = \"charlm\"");
    assert_eq!(fields_of(&text), vec!["dataset.kind"]);
}

#[test]
fn cnn_layer_errors_carry_their_index() {
    let text = BASE
        .replace(
            "kind = \"mlp\"",
            "kind = \"cnn\"\nconv = [{ channels = 8 }, { channels = 0, kernel = 3, pool = 9 }]",
        )
        .replace(
            "kind = \"synthetic\"",
            "kind = \"idx\"\npath = \"data/mnist\"",
        );
    assert_eq!(
        fields_of(&text),
        vec!["model.conv[1].channels", "model.conv[1].pool"]
    );
}

#[test]
fn toml_and_json_round_trip() {
    for example in ["mnist-mlp.toml", "mnist-cnn.toml", "charlm.toml"] {
        let path = format!("{}/../../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("example exists");
        let spec = JobSpec::from_toml_str(&text).expect("example is valid");
        let json = serde_json::to_string(&spec).expect("json");
        assert_eq!(JobSpec::from_json_str(&json).expect("json parses"), spec);
        assert_eq!(
            JobSpec::from_toml_str(&spec.to_toml_string()).expect("toml"),
            spec
        );
    }
}

#[test]
fn json_errors_are_reported_too() {
    let err = JobSpec::from_json_str(r#"{"name":"x","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"},"training":{"batch_size":-1}}"#)
        .unwrap_err();
    assert!(
        matches!(err, SpecError::Parse { format: "JSON", .. }),
        "{err}"
    );
}

#[test]
fn distributed_section_defaults_and_round_trips() {
    let single = JobSpec::from_toml_str(BASE).expect("base spec");
    assert!(single.distributed.is_single());
    // A spec without the section serializes without it (stored specs stay as they were).
    assert!(
        !serde_json::to_string(&single)
            .unwrap()
            .contains("distributed")
    );

    let text = spec_with(
        "distributed",
        "workers = 3\nmin_workers = 2\nsync = { every = 8 }",
    );
    let spec = JobSpec::from_toml_str(&text).expect("distributed spec");
    assert_eq!(spec.distributed.workers, 3);
    assert_eq!(spec.distributed.min(), 2);
    assert_eq!(
        spec.distributed.sync,
        SyncSpec::Every {
            every: 8,
            outer_lr: None
        }
    );
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.contains(r#""sync":{"every":8}"#), "{json}");
    assert_eq!(JobSpec::from_json_str(&json).unwrap(), spec);
    assert_eq!(
        JobSpec::from_toml_str(&spec.to_toml_string()).unwrap(),
        spec
    );

    let text = spec_with("distributed", "workers = 2\nsync = \"gradients\"");
    let spec = JobSpec::from_toml_str(&text).expect("gradients");
    assert_eq!(spec.distributed.sync, SyncSpec::Gradients);
    assert_eq!(spec.distributed.min(), 2);

    let d = &spec.distributed;
    assert_eq!(
        d.describe(32, None),
        "2 workers (at least 2) · batch 32 per rank = 64 global · sync gradients"
    );
    assert_eq!(
        d.describe(32, Some(1)),
        "2 workers (at least 2) · batch 32 per rank = 32 global · sync gradients (this attempt: 1 ranks)"
    );

    let bad = spec_with("distributed", "sync = \"sometimes\"");
    let fields = fields_of(&bad);
    assert!(fields[0].starts_with("parse:"), "{fields:?}");
}
