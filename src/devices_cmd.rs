//! `kiln devices`: which devices this kiln can train on here, found by trying each one.

use std::process::ExitCode;

use kiln_train::device::{self, DeviceProbe};

#[derive(clap::Args)]
pub struct DevicesArgs {
    /// Print JSON (a list of `{kind, available, detail}`) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<ExitCode> {
    let found = device::probe();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", table(&found));
    }
    Ok(ExitCode::SUCCESS)
}

fn table(found: &[DeviceProbe]) -> String {
    found
        .iter()
        .map(|d| {
            format!(
                "{:<5} {:<3} {}\n",
                d.kind.as_str(),
                if d.available { "yes" } else { "no" },
                d.detail
            )
        })
        .collect()
}
