//! `muster-loadgen`: parses the command line, prepares the template, runs, prints.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use muster_loadgen::cli::Args;
use muster_loadgen::payload::{Payloads, Template};

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        // The run happened, but the server failed some requests.
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if let Some(config) = args.commands_config()? {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let report = runtime.block_on(muster_loadgen::commands::run(&config))?;
        let json = serde_json::to_string_pretty(&report)?;
        if let Some(path) = &args.output {
            std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
        }
        if args.json {
            println!("{json}");
        } else {
            print!("{}", report.table());
        }
        return Ok(report.clean());
    }
    let config = args.config()?;
    let template = match &args.template {
        Some(path) => Template::load(path)?,
        None => Template::scan(),
    };
    let payloads = Payloads::new(template, config.seed, config.bumped_packages);
    // One thread: the generator leaves the other core to the server it measures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(muster_loadgen::run(&config, payloads))?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.output {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(report.errors() == 0)
}
