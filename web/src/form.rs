//! The new-job form: its fields, presets, and the one conversion from what the inputs hold to a
//! [`JobSpec`]. Errors carry the spec's dotted field paths, so the page shows each one at its
//! input; the final word is [`JobSpec::validate`], the same check the coordinator runs.

use std::collections::BTreeMap;

use kiln_proto::spec::{
    Activation, ConvSpec, CsvTask, DatasetSpec, DeviceRequest, FieldError, GradClip, JobSpec,
    ModelSpec, OptimizerKind, OptimizerSpec, ScheduleSpec, TrainingSpec,
};

/// What the inputs hold, keyed by the spec's dotted field path.
pub type FormValues = BTreeMap<String, String>;

/// How an input looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Text,
    Number,
    Select(&'static [&'static str]),
}

/// One input of the form.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The spec's dotted path; also the input's id (`f-` + path with dots as dashes).
    pub path: &'static str,
    pub label: &'static str,
    pub input: Input,
    /// A short hint under the input.
    pub help: &'static str,
    /// Shown only when this `(path, values)` matches, e.g. `("model.kind", &["mlp", "cnn"])`.
    pub when: Option<(&'static str, &'static [&'static str])>,
}

/// Sections of the form, in order.
pub const SECTIONS: &[(&str, &[Field])] = &[
    (
        "Run",
        &[
            f("name", "Name", Input::Text, "letters, digits, - _ .", None),
            f(
                "device",
                "Device",
                Input::Select(&["auto", "cpu", "wgpu", "cuda", "webgpu"]),
                "auto: the worker's best device",
                None,
            ),
            f(
                "priority",
                "Priority",
                Input::Number,
                "higher runs first",
                None,
            ),
            f("seed", "Seed", Input::Number, "", None),
        ],
    ),
    (
        "Model",
        &[
            f(
                "model.kind",
                "Model",
                Input::Select(&["mlp", "cnn", "charlm"]),
                "",
                None,
            ),
            f(
                "model.conv",
                "Convolutions",
                Input::Text,
                "channels:kernel[:pool[:padding]], comma separated, e.g. 32:3, 64:3:2",
                Some(("model.kind", &["cnn"])),
            ),
            f(
                "model.hidden",
                "Hidden layers",
                Input::Text,
                "widths, comma separated, e.g. 128 or 256, 128",
                Some(("model.kind", &["mlp", "cnn"])),
            ),
            f(
                "model.activation",
                "Activation",
                Input::Select(&["relu", "gelu", "tanh", "sigmoid"]),
                "",
                Some(("model.kind", &["mlp", "cnn"])),
            ),
            f(
                "model.context",
                "Context (characters)",
                Input::Number,
                "",
                Some(("model.kind", &["charlm"])),
            ),
            f(
                "model.d_model",
                "Width (d_model)",
                Input::Number,
                "",
                Some(("model.kind", &["charlm"])),
            ),
            f(
                "model.heads",
                "Attention heads",
                Input::Number,
                "",
                Some(("model.kind", &["charlm"])),
            ),
            f(
                "model.layers",
                "Layers",
                Input::Number,
                "",
                Some(("model.kind", &["charlm"])),
            ),
            f("model.dropout", "Dropout", Input::Number, "in [0, 1)", None),
        ],
    ),
    (
        "Dataset",
        &[
            f(
                "dataset.kind",
                "Dataset",
                Input::Select(&["idx", "csv", "text", "synthetic"]),
                "idx: MNIST-style files; text: for charlm",
                None,
            ),
            f(
                "dataset.path",
                "Path",
                Input::Text,
                "on the worker, or kiln:NAME for a stored dataset",
                Some(("dataset.kind", &["idx", "csv", "text"])),
            ),
            f(
                "dataset.label_column",
                "Label column",
                Input::Text,
                "",
                Some(("dataset.kind", &["csv"])),
            ),
            f(
                "dataset.task",
                "Task",
                Input::Select(&["classification", "regression"]),
                "",
                Some(("dataset.kind", &["csv"])),
            ),
            f(
                "dataset.limit",
                "Use at most (examples)",
                Input::Number,
                "empty: all",
                Some(("dataset.kind", &["idx"])),
            ),
            f(
                "dataset.examples",
                "Examples",
                Input::Number,
                "",
                Some(("dataset.kind", &["synthetic"])),
            ),
            f(
                "dataset.features",
                "Features",
                Input::Number,
                "",
                Some(("dataset.kind", &["synthetic"])),
            ),
            f(
                "dataset.classes",
                "Classes",
                Input::Number,
                "",
                Some(("dataset.kind", &["synthetic"])),
            ),
            f(
                "dataset.validation_fraction",
                "Validation fraction",
                Input::Number,
                "held out of the training data",
                None,
            ),
        ],
    ),
    (
        "Optimizer",
        &[
            f(
                "optimizer.kind",
                "Optimizer",
                Input::Select(&["adam", "adamw", "sgd"]),
                "",
                None,
            ),
            f("optimizer.lr", "Learning rate", Input::Number, "peak", None),
            f(
                "optimizer.weight_decay",
                "Weight decay",
                Input::Number,
                "",
                None,
            ),
            f(
                "optimizer.momentum",
                "Momentum",
                Input::Number,
                "",
                Some(("optimizer.kind", &["sgd"])),
            ),
            f(
                "schedule.kind",
                "Schedule",
                Input::Select(&["constant", "step", "cosine"]),
                "",
                None,
            ),
            f(
                "schedule.step_size",
                "Step size",
                Input::Number,
                "steps between decays",
                Some(("schedule.kind", &["step"])),
            ),
            f(
                "schedule.gamma",
                "Gamma",
                Input::Number,
                "factor per decay",
                Some(("schedule.kind", &["step"])),
            ),
            f(
                "schedule.warmup_steps",
                "Warm-up steps",
                Input::Number,
                "",
                Some(("schedule.kind", &["cosine"])),
            ),
            f(
                "schedule.min_lr",
                "Final learning rate",
                Input::Number,
                "",
                Some(("schedule.kind", &["cosine"])),
            ),
        ],
    ),
    (
        "Training",
        &[
            f("training.batch_size", "Batch size", Input::Number, "", None),
            f("training.epochs", "Epochs", Input::Number, "", None),
            f(
                "training.max_steps",
                "Max steps",
                Input::Number,
                "empty: run all epochs",
                None,
            ),
            f(
                "training.log_every",
                "Log every (steps)",
                Input::Number,
                "",
                None,
            ),
            f(
                "training.eval_every",
                "Evaluate every (steps)",
                Input::Number,
                "empty: at the end only",
                None,
            ),
            f(
                "training.checkpoint_every",
                "Checkpoint every (steps)",
                Input::Number,
                "empty: at the end only",
                None,
            ),
            f(
                "training.grad_clip",
                "Gradient clipping",
                Input::Text,
                "empty, norm:1.0 or value:0.5",
                None,
            ),
            f(
                "distributed.workers",
                "Workers",
                Input::Number,
                "2 or more train one model together (data-parallel); batch size is per worker",
                None,
            ),
        ],
    ),
];

const fn f(
    path: &'static str,
    label: &'static str,
    input: Input,
    help: &'static str,
    when: Option<(&'static str, &'static [&'static str])>,
) -> Field {
    Field {
        path,
        label,
        input,
        help,
        when,
    }
}

impl Field {
    /// The input's DOM id.
    pub fn id(&self) -> String {
        format!("f-{}", self.path.replace('.', "-"))
    }

    /// Whether the input applies to the current choices.
    pub fn visible(&self, values: &FormValues) -> bool {
        match self.when {
            None => true,
            Some((path, allowed)) => values
                .get(path)
                .is_some_and(|v| allowed.contains(&v.as_str())),
        }
    }
}

/// Every field, flat.
pub fn fields() -> impl Iterator<Item = &'static Field> {
    SECTIONS.iter().flat_map(|(_, fields)| fields.iter())
}

/// The input an error belongs to: the field whose path is the longest prefix of the error's
/// (`model.conv[1].kernel` → `model.conv`). `None`: show it above the form.
pub fn field_for_error(error_path: &str) -> Option<&'static str> {
    fields()
        .map(|f| f.path)
        .filter(|p| {
            error_path == *p
                || error_path
                    .strip_prefix(p)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
        .max_by_key(|p| p.len())
}

/// Built-in starting points: (id, label, TOML).
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "mnist-mlp",
        "MNIST MLP (W1)",
        include_str!("../../examples/mnist-mlp.toml"),
    ),
    (
        "mnist-cnn",
        "MNIST CNN (W2)",
        include_str!("../../examples/mnist-cnn.toml"),
    ),
    (
        "charlm",
        "Character LM",
        include_str!("../../examples/charlm.toml"),
    ),
    (
        "synthetic",
        "Synthetic blobs (seconds)",
        include_str!("../../examples/synthetic.toml"),
    ),
];

/// The form filled in from a spec (a preset, or "new job like this one").
pub fn values_from_spec(spec: &JobSpec) -> FormValues {
    let mut v = FormValues::new();
    let mut set = |k: &str, val: String| {
        v.insert(k.to_string(), val);
    };
    let list = |xs: &[usize]| {
        xs.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let opt = |x: Option<u64>| x.map(|x| x.to_string()).unwrap_or_default();
    set("name", spec.name.clone());
    set("device", spec.device.as_str().into());
    set("priority", spec.priority.to_string());
    set("seed", spec.seed.to_string());
    // Defaults for the inputs of the other kinds, so switching kind starts from sane values.
    set("model.hidden", "128".into());
    set("model.activation", "relu".into());
    set("model.conv", "32:3, 64:3:2".into());
    set("model.context", "64".into());
    set("model.d_model", "64".into());
    set("model.heads", "4".into());
    set("model.layers", "2".into());
    set("model.kind", spec.model.kind().into());
    match &spec.model {
        ModelSpec::Mlp {
            hidden,
            activation,
            dropout,
        } => {
            set("model.hidden", list(hidden));
            set("model.activation", activation_str(*activation).into());
            set("model.dropout", dropout.to_string());
        }
        ModelSpec::Cnn {
            conv,
            hidden,
            activation,
            dropout,
        } => {
            let conv = conv
                .iter()
                .map(|c| {
                    let mut s = format!("{}:{}", c.channels, c.kernel);
                    if c.pool != 1 || c.padding != 0 {
                        s.push_str(&format!(":{}", c.pool));
                    }
                    if c.padding != 0 {
                        s.push_str(&format!(":{}", c.padding));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", ");
            set("model.conv", conv);
            set("model.hidden", list(hidden));
            set("model.activation", activation_str(*activation).into());
            set("model.dropout", dropout.to_string());
        }
        ModelSpec::Charlm {
            context,
            d_model,
            heads,
            layers,
            d_ff: _,
            dropout,
        } => {
            set("model.context", context.to_string());
            set("model.d_model", d_model.to_string());
            set("model.heads", heads.to_string());
            set("model.layers", layers.to_string());
            set("model.dropout", dropout.to_string());
        }
    }
    set("dataset.path", "data/mnist".into());
    set("dataset.label_column", "label".into());
    set("dataset.task", "classification".into());
    set("dataset.examples", "1024".into());
    set("dataset.features", "16".into());
    set("dataset.classes", "4".into());
    set("dataset.kind", spec.dataset.kind().into());
    set(
        "dataset.validation_fraction",
        spec.dataset.validation_fraction().to_string(),
    );
    if let Some(path) = spec.dataset.path() {
        set("dataset.path", path.to_string());
    }
    match &spec.dataset {
        DatasetSpec::Idx { limit, .. } => set("dataset.limit", opt(limit.map(|l| l as u64))),
        DatasetSpec::Csv {
            label_column, task, ..
        } => {
            set("dataset.label_column", label_column.clone());
            set(
                "dataset.task",
                match task {
                    CsvTask::Classification => "classification",
                    CsvTask::Regression => "regression",
                }
                .into(),
            );
        }
        DatasetSpec::Text { .. } => {}
        DatasetSpec::Synthetic {
            examples,
            features,
            classes,
            ..
        } => {
            set("dataset.examples", examples.to_string());
            set("dataset.features", features.to_string());
            set("dataset.classes", classes.to_string());
        }
    }
    let o = &spec.optimizer;
    set("optimizer.kind", o.kind.as_str().into());
    set("optimizer.lr", o.lr.to_string());
    set("optimizer.weight_decay", o.weight_decay.to_string());
    set("optimizer.momentum", o.momentum.to_string());
    set("schedule.step_size", "1000".into());
    set("schedule.gamma", "0.5".into());
    set("schedule.warmup_steps", "0".into());
    set("schedule.min_lr", "0".into());
    match &spec.schedule {
        ScheduleSpec::Constant => set("schedule.kind", "constant".into()),
        ScheduleSpec::Step { step_size, gamma } => {
            set("schedule.kind", "step".into());
            set("schedule.step_size", step_size.to_string());
            set("schedule.gamma", gamma.to_string());
        }
        ScheduleSpec::Cosine {
            warmup_steps,
            min_lr,
        } => {
            set("schedule.kind", "cosine".into());
            set("schedule.warmup_steps", warmup_steps.to_string());
            set("schedule.min_lr", min_lr.to_string());
        }
    }
    let t = &spec.training;
    set("training.batch_size", t.batch_size.to_string());
    set("training.epochs", t.epochs.to_string());
    set("training.max_steps", opt(t.max_steps));
    set("training.log_every", t.log_every.to_string());
    set("training.eval_every", opt(t.eval_every));
    set("training.checkpoint_every", opt(t.checkpoint_every));
    set("distributed.workers", spec.distributed.workers.to_string());
    set(
        "training.grad_clip",
        match t.grad_clip {
            None => String::new(),
            Some(GradClip::Norm(x)) => format!("norm:{x}"),
            Some(GradClip::Value(x)) => format!("value:{x}"),
        },
    );
    v
}

fn activation_str(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Gelu => "gelu",
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
    }
}

/// Reads the inputs, collecting every problem with its field path.
struct Reader<'a> {
    values: &'a FormValues,
    errors: Vec<FieldError>,
}

impl Reader<'_> {
    fn raw(&self, path: &str) -> &str {
        self.values.get(path).map(|s| s.trim()).unwrap_or("")
    }

    fn error(&mut self, path: &str, allowed: &str) {
        let value = self.raw(path);
        let value = if value.is_empty() {
            "nothing".to_string()
        } else {
            format!("`{value}`")
        };
        self.errors.push(FieldError {
            field: path.to_string(),
            value,
            allowed: allowed.to_string(),
        });
    }

    /// A required number; on error a placeholder that `validate` will not report twice.
    fn num<T: std::str::FromStr + Default>(&mut self, path: &str, allowed: &str) -> T {
        match self.raw(path).parse() {
            Ok(x) => x,
            Err(_) => {
                self.error(path, allowed);
                T::default()
            }
        }
    }

    /// An optional number: empty is `None`.
    fn opt<T: std::str::FromStr>(&mut self, path: &str, allowed: &str) -> Option<T> {
        if self.raw(path).is_empty() {
            return None;
        }
        match self.raw(path).parse() {
            Ok(x) => Some(x),
            Err(_) => {
                self.error(path, allowed);
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, path: &str, options: &[(&str, T)]) -> T {
        let raw = self.raw(path);
        match options.iter().find(|(name, _)| *name == raw) {
            Some((_, v)) => *v,
            None => {
                let allowed = options
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.error(path, &allowed);
                options[0].1
            }
        }
    }

    fn widths(&mut self, path: &str) -> Vec<usize> {
        let raw = self.raw(path).to_string();
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse() {
                Ok(w) => out.push(w),
                Err(_) => {
                    self.error(path, "layer widths as whole numbers, comma separated");
                    return vec![];
                }
            }
        }
        out
    }

    fn convs(&mut self, path: &str) -> Vec<ConvSpec> {
        let raw = self.raw(path).to_string();
        let mut out = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let nums: Result<Vec<usize>, _> = part.split(':').map(|n| n.trim().parse()).collect();
            match nums.as_deref() {
                Ok([channels, kernel, rest @ ..]) if rest.len() <= 2 => out.push(ConvSpec {
                    channels: *channels,
                    kernel: *kernel,
                    pool: rest.first().copied().unwrap_or(1),
                    padding: rest.get(1).copied().unwrap_or(0),
                }),
                _ => {
                    self.error(
                        path,
                        "convolutions as channels:kernel[:pool[:padding]], comma separated",
                    );
                    return vec![];
                }
            }
        }
        if out.is_empty() && self.errors.iter().all(|e| e.field != path) {
            self.error(path, "at least one convolution, e.g. 32:3");
        }
        out
    }
}

/// The spec the form describes, or every problem with it (parsing first, then
/// [`JobSpec::validate`]; a field that failed to parse is not reported twice).
///
/// `base` is the spec the form was filled from ("new job like this"): the fields the form has
/// no input for (`max_attempts`, Adam's betas and epsilon, a charlm's `d_ff`) are kept from
/// it instead of falling back to their defaults.
pub fn spec_from_values(
    values: &FormValues,
    base: Option<&JobSpec>,
) -> Result<JobSpec, Vec<FieldError>> {
    let mut r = Reader {
        values,
        errors: Vec::new(),
    };
    let num_u = "a whole number ≥ 0";
    let num_f = "a number";
    let device = r.choice(
        "device",
        &[
            ("auto", DeviceRequest::Auto),
            ("cpu", DeviceRequest::Cpu),
            ("wgpu", DeviceRequest::Wgpu),
            ("cuda", DeviceRequest::Cuda),
            ("webgpu", DeviceRequest::Webgpu),
        ],
    );
    let priority = r.num::<i32>("priority", "a whole number");
    let seed = r.num::<u64>("seed", num_u);
    let activation = |r: &mut Reader| {
        r.choice(
            "model.activation",
            &[
                ("relu", Activation::Relu),
                ("gelu", Activation::Gelu),
                ("tanh", Activation::Tanh),
                ("sigmoid", Activation::Sigmoid),
            ],
        )
    };
    let model_kind = r.choice("model.kind", &[("mlp", 0u8), ("cnn", 1), ("charlm", 2)]);
    let dropout = r.num::<f64>("model.dropout", num_f);
    let model = match model_kind {
        0 => ModelSpec::Mlp {
            hidden: r.widths("model.hidden"),
            activation: activation(&mut r),
            dropout,
        },
        1 => ModelSpec::Cnn {
            conv: r.convs("model.conv"),
            hidden: r.widths("model.hidden"),
            activation: activation(&mut r),
            dropout,
        },
        _ => ModelSpec::Charlm {
            context: r.num("model.context", num_u),
            d_model: r.num("model.d_model", num_u),
            heads: r.num("model.heads", num_u),
            layers: r.num("model.layers", num_u),
            d_ff: None,
            dropout,
        },
    };
    let validation_fraction = r.num::<f64>("dataset.validation_fraction", num_f);
    let path = r.raw("dataset.path").to_string();
    let dataset = match r.choice(
        "dataset.kind",
        &[("idx", 0u8), ("csv", 1), ("text", 2), ("synthetic", 3)],
    ) {
        0 => DatasetSpec::Idx {
            path,
            validation_fraction,
            limit: r.opt("dataset.limit", num_u),
        },
        1 => DatasetSpec::Csv {
            path,
            label_column: r.raw("dataset.label_column").to_string(),
            task: r.choice(
                "dataset.task",
                &[
                    ("classification", CsvTask::Classification),
                    ("regression", CsvTask::Regression),
                ],
            ),
            validation_fraction,
        },
        2 => DatasetSpec::Text {
            path,
            validation_fraction,
        },
        _ => DatasetSpec::Synthetic {
            examples: r.num("dataset.examples", num_u),
            features: r.num("dataset.features", num_u),
            classes: r.num("dataset.classes", num_u),
            validation_fraction,
        },
    };
    let optimizer = OptimizerSpec {
        kind: r.choice(
            "optimizer.kind",
            &[
                ("adam", OptimizerKind::Adam),
                ("adamw", OptimizerKind::Adamw),
                ("sgd", OptimizerKind::Sgd),
            ],
        ),
        lr: r.num("optimizer.lr", num_f),
        weight_decay: r.num("optimizer.weight_decay", num_f),
        momentum: if r.raw("optimizer.momentum").is_empty() {
            0.0
        } else {
            r.num("optimizer.momentum", num_f)
        },
        ..OptimizerSpec::default()
    };
    let schedule = match r.choice(
        "schedule.kind",
        &[("constant", 0u8), ("step", 1), ("cosine", 2)],
    ) {
        0 => ScheduleSpec::Constant,
        1 => ScheduleSpec::Step {
            step_size: r.num("schedule.step_size", num_u),
            gamma: r.num("schedule.gamma", num_f),
        },
        _ => ScheduleSpec::Cosine {
            warmup_steps: r.num("schedule.warmup_steps", num_u),
            min_lr: r.num("schedule.min_lr", num_f),
        },
    };
    let grad_clip = {
        let raw = r.raw("training.grad_clip").to_string();
        let allowed = "empty, norm:<number> or value:<number>";
        if raw.is_empty() {
            None
        } else {
            match raw.split_once(':') {
                Some(("norm", x)) if x.trim().parse::<f64>().is_ok() => {
                    x.trim().parse().ok().map(GradClip::Norm)
                }
                Some(("value", x)) if x.trim().parse::<f64>().is_ok() => {
                    x.trim().parse().ok().map(GradClip::Value)
                }
                _ => {
                    r.error("training.grad_clip", allowed);
                    None
                }
            }
        }
    };
    let training = TrainingSpec {
        batch_size: r.num("training.batch_size", num_u),
        epochs: r.num("training.epochs", num_u),
        max_steps: r.opt("training.max_steps", num_u),
        eval_every: r.opt("training.eval_every", num_u),
        checkpoint_every: r.opt("training.checkpoint_every", num_u),
        log_every: r.num("training.log_every", num_u),
        grad_clip,
    };
    let workers: u32 = r.num("distributed.workers", num_u);
    let mut spec = JobSpec {
        name: r.raw("name").to_string(),
        seed,
        device,
        priority,
        max_attempts: 3,
        model,
        dataset,
        optimizer,
        schedule,
        training,
        distributed: Default::default(),
    };
    if let Some(base) = base {
        spec.max_attempts = base.max_attempts;
        // The rest of the section (min_workers, sync, gang_wait_s) has no input.
        spec.distributed = base.distributed.clone();
        spec.optimizer.beta1 = base.optimizer.beta1;
        spec.optimizer.beta2 = base.optimizer.beta2;
        spec.optimizer.epsilon = base.optimizer.epsilon;
        if let (ModelSpec::Charlm { d_ff, .. }, ModelSpec::Charlm { d_ff: kept, .. }) =
            (&mut spec.model, &base.model)
        {
            *d_ff = *kept;
        }
    }
    spec.distributed.workers = workers;
    if let Some(min) = spec.distributed.min_workers
        && min > workers
    {
        // A base job's elastic floor above the new world: the floor follows it down.
        spec.distributed.min_workers = Some(workers);
    }
    let mut errors = r.errors;
    if let Err(more) = spec.validate() {
        // A field that did not parse holds a placeholder: its own error is the useful one.
        let unparsed: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
        errors.extend(
            more.into_iter()
                .filter(|e| !unparsed.iter().any(|u| e.field.starts_with(u.as_str()))),
        );
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

/// Errors grouped by the input they belong to; `""` holds those without an input.
pub fn errors_by_field(errors: &[FieldError]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in errors {
        let key = field_for_error(&e.field).unwrap_or("").to_string();
        out.entry(key).or_default().push(e.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(id: &str) -> JobSpec {
        let (_, _, toml) = PRESETS
            .iter()
            .find(|(p, _, _)| *p == id)
            .expect("preset exists");
        JobSpec::from_toml_str(toml).expect("preset parses")
    }

    #[test]
    fn every_preset_round_trips_through_the_form() {
        for (id, _, _) in PRESETS {
            let spec = preset(id);
            let values = values_from_spec(&spec);
            let back = spec_from_values(&values, None).unwrap_or_else(|e| panic!("{id}: {e:?}"));
            assert_eq!(back, spec, "preset {id}");
        }
    }

    #[test]
    fn fields_without_an_input_are_kept_from_the_base_spec() {
        let mut spec = preset("charlm");
        spec.max_attempts = 7;
        spec.optimizer.beta2 = 0.95;
        spec.optimizer.epsilon = 1e-9;
        if let ModelSpec::Charlm { d_ff, .. } = &mut spec.model {
            *d_ff = Some(96);
        }
        let values = values_from_spec(&spec);
        assert_eq!(spec_from_values(&values, Some(&spec)).expect("valid"), spec);
        // Without the base they fall back to the defaults.
        let fresh = spec_from_values(&values, None).expect("valid");
        assert_eq!((fresh.max_attempts, fresh.optimizer.beta2), (3, 0.999));
    }

    #[test]
    fn workers_come_from_the_form_and_the_rest_of_distributed_from_the_base() {
        let mut base = preset("mnist-mlp");
        base.distributed.workers = 4;
        base.distributed.min_workers = Some(3);
        base.distributed.sync = kiln_proto::spec::SyncSpec::Every {
            every: 8,
            outer_lr: None,
        };
        let mut values = values_from_spec(&base);
        assert_eq!(
            values.get("distributed.workers").map(String::as_str),
            Some("4")
        );
        values.insert("distributed.workers".into(), "2".into());
        let spec = spec_from_values(&values, Some(&base)).expect("valid");
        assert_eq!(spec.distributed.workers, 2);
        // The floor follows the world down; the sync mode is kept.
        assert_eq!(spec.distributed.min_workers, Some(2));
        assert_eq!(spec.distributed.sync, base.distributed.sync);
        values.insert("distributed.workers".into(), "65".into());
        let errors = spec_from_values(&values, None).expect_err("too many");
        assert_eq!(errors[0].field, "distributed.workers");
        assert_eq!(
            field_for_error(&errors[0].field),
            Some("distributed.workers")
        );
    }

    #[test]
    fn parse_errors_name_the_field_and_are_not_reported_twice() {
        let mut v = values_from_spec(&preset("mnist-mlp"));
        v.insert("optimizer.lr".into(), "fast".into());
        v.insert("model.hidden".into(), "128, x".into());
        let errors = spec_from_values(&v, None).expect_err("must fail");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["model.hidden", "optimizer.lr"]);
        assert!(errors[1].to_string().contains("`fast`"), "{}", errors[1]);
    }

    #[test]
    fn validate_errors_land_on_their_inputs() {
        let mut v = values_from_spec(&preset("mnist-cnn"));
        v.insert("training.batch_size".into(), "0".into());
        v.insert("model.dropout".into(), "2".into());
        v.insert("model.conv".into(), "32:0".into());
        v.insert("name".into(), "bad name!".into());
        let errors = spec_from_values(&v, None).expect_err("must fail");
        let by_field = errors_by_field(&errors);
        for field in ["training.batch_size", "model.dropout", "model.conv", "name"] {
            assert!(by_field.contains_key(field), "{field}: {by_field:?}");
        }
        assert!(!by_field.contains_key(""), "{by_field:?}");
    }

    #[test]
    fn error_paths_map_to_the_longest_matching_input() {
        assert_eq!(field_for_error("model.conv[1].kernel"), Some("model.conv"));
        assert_eq!(field_for_error("model.hidden[0]"), Some("model.hidden"));
        assert_eq!(field_for_error("dataset.path"), Some("dataset.path"));
        assert_eq!(field_for_error("model.d_ff"), None);
        // A prefix that is not a path boundary does not match.
        assert_eq!(field_for_error("namespace"), None);
    }

    #[test]
    fn visibility_follows_the_kind() {
        let v = values_from_spec(&preset("charlm"));
        let visible: Vec<&str> = fields().filter(|f| f.visible(&v)).map(|f| f.path).collect();
        assert!(visible.contains(&"model.heads"));
        assert!(!visible.contains(&"model.conv"));
        assert!(!visible.contains(&"dataset.label_column"));
    }
}
