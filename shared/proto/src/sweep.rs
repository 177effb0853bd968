//! Grid sweeps: one base spec and axes `key=v1,v2` → one spec per combination. The CLI's
//! `kiln sweep --grid` and the dashboard's sweep form both use this.

use std::collections::BTreeMap;

use crate::spec::JobSpec;

/// One axis of a grid: a dotted spec path and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<serde_json::Value>,
}

impl std::str::FromStr for Axis {
    type Err = String;

    /// `optimizer.lr=1e-3,3e-3`; values are JSON where they parse as JSON, else strings.
    fn from_str(text: &str) -> Result<Self, String> {
        let (key, values) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected key=v1,v2 (e.g. optimizer.lr=1e-3,3e-3)"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("`{text}`: no field name before '='"));
        }
        let values: Vec<serde_json::Value> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()))
            })
            .collect();
        if values.is_empty() {
            return Err(format!("`{text}`: no values after '='"));
        }
        Ok(Axis {
            key: key.to_string(),
            values,
        })
    }
}

/// Most specs one sweep may make.
pub const MAX_COMBINATIONS: usize = 256;

/// One spec per combination of the axes (a later axis with the same key replaces an earlier
/// one), each named `<base>-<field><value>…` and validated.
pub fn expand(base: &JobSpec, axes: &[Axis]) -> Result<Vec<JobSpec>, String> {
    let axes: BTreeMap<&str, &[serde_json::Value]> = axes
        .iter()
        .map(|a| (a.key.as_str(), a.values.as_slice()))
        .collect();
    // Checked: 64 axes of two values overflow a usize (found by fuzz/sweep_grid).
    let count = axes
        .values()
        .try_fold(1usize, |n, v| n.checked_mul(v.len()));
    match count {
        Some(count) if count <= MAX_COMBINATIONS => {}
        Some(count) => {
            return Err(format!(
                "the grid has {count} combinations; allowed: at most {MAX_COMBINATIONS}"
            ));
        }
        None => {
            return Err(format!(
                "the grid has more combinations than can be counted; allowed: at most \
                 {MAX_COMBINATIONS}"
            ));
        }
    }
    let mut combos: Vec<Vec<(&str, &serde_json::Value)>> = vec![vec![]];
    for (key, values) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((*key, v));
                    c
                })
            })
            .collect();
    }
    let base_json = serde_json::to_value(base).map_err(|e| e.to_string())?;
    combos
        .into_iter()
        .map(|combo| {
            let mut value = base_json.clone();
            let mut suffix = Vec::new();
            for (key, v) in &combo {
                let pointer = format!("/{}", key.replace('.', "/"));
                let slot = value.pointer_mut(&pointer).ok_or_else(|| {
                    format!(
                        "the spec has no field `{key}` (fields are dotted paths like \
                         optimizer.lr, training.batch_size; a field left at its default \
                         can be swept only if the base spec sets it)"
                    )
                })?;
                *slot = (*v).clone();
                let short = key.rsplit('.').next().unwrap_or(key);
                let shown = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                suffix.push(format!("{short}{shown}"));
            }
            let name = format!("{}-{}", base.name, suffix.join("-"));
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect();
            value["name"] = serde_json::Value::String(name);
            let spec = JobSpec::from_json_str(&value.to_string())
                .map_err(|e| format!("the combination {} gives {e}", describe(&combo)))?;
            spec.validate().map_err(|errors| {
                let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                format!(
                    "the combination {} is invalid: {}",
                    describe(&combo),
                    list.join("; ")
                )
            })?;
            Ok(spec)
        })
        .collect()
}

fn describe(combo: &[(&str, &serde_json::Value)]) -> String {
    combo
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> JobSpec {
        JobSpec::from_toml_str(
            "name = \"b\"\n[model]\nkind = \"mlp\"\n[dataset]\nkind = \"synthetic\"\n\
             [optimizer]\nlr = 0.001\n[training]\nbatch_size = 32\n",
        )
        .expect("base spec")
    }

    #[test]
    fn expands_the_cartesian_product_with_names() {
        let axes: Vec<Axis> = ["optimizer.lr=0.001,0.01", "training.batch_size=32,64"]
            .iter()
            .map(|a| a.parse().expect("axis"))
            .collect();
        let specs = expand(&base(), &axes).expect("expands");
        assert_eq!(specs.len(), 4);
        assert_eq!(specs[0].name, "b-lr0.001-batch_size32");
        assert_eq!(specs[3].optimizer.lr, 0.01);
        assert_eq!(specs[3].training.batch_size, 64);
    }

    #[test]
    fn bad_axes_and_values_are_named() {
        assert!(
            "lr".parse::<Axis>()
                .expect_err("must fail")
                .contains("key=v1,v2")
        );
        assert!(
            "lr="
                .parse::<Axis>()
                .expect_err("must fail")
                .contains("no values")
        );
        let axes = vec!["optimizer.nope=1".parse().expect("axis")];
        assert!(
            expand(&base(), &axes)
                .expect_err("must fail")
                .contains("optimizer.nope")
        );
        let axes = vec!["training.batch_size=0".parse().expect("axis")];
        let err = expand(&base(), &axes).expect_err("must fail");
        assert!(err.contains("training.batch_size"), "{err}");
        let axes = vec!["seed=[1,2]".parse::<Axis>().expect("axis")];
        assert!(expand(&base(), &axes).is_err());
    }

    #[test]
    fn huge_grids_are_refused() {
        let many = (0..17).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let axes: Vec<Axis> = [format!("seed={many}"), format!("priority={many}")]
            .iter()
            .map(|a| a.parse().expect("axis"))
            .collect();
        assert!(
            expand(&base(), &axes)
                .expect_err("must fail")
                .contains("289 combinations")
        );
        // 2^64 combinations: more than a usize counts (on wasm32, 2^32 already).
        let axes: Vec<Axis> = (0..64)
            .map(|i| format!("k{i}=1,2").parse().expect("axis"))
            .collect();
        let error = expand(&base(), &axes).expect_err("must fail");
        assert!(
            error.contains("more combinations than can be counted"),
            "{error}"
        );
    }
}
