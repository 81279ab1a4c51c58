//! Embeds flotilla in a program: in-memory store and queue, local engine.
//!
//! Defines `hello-flotilla`, executes it, waits for it to stop and prints
//! the final run and its log.
//!
//! ```text
//! cargo run -p examples --example embed
//! ```

use std::time::Duration;

use flotilla::{ExecuteRequest, Flotilla};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // Run directories and logs of the local engine go here.
    let data = std::env::temp_dir().join(format!("flotilla-embed-{}", std::process::id()));
    let flotilla = Flotilla::builder().build_local(&data)?;
    let workers = flotilla.start();

    // The flotilla-os quick-start definition, shipped beside this file.
    let body = include_str!("hello-world.json");
    let definition = flotilla.define(serde_json::from_str(body)?).await?;

    let run = flotilla
        .execute(
            &definition.definition_id,
            ExecuteRequest::owned_by("me").env("USERNAME", "flotilla"),
        )
        .await?;
    let done = flotilla
        .wait_for_stop(&run.run_id, Duration::from_secs(60))
        .await?;
    let (_, log) = flotilla.logs(&run.run_id, None, 64 * 1024).await?;

    println!("{}", serde_json::to_string_pretty(&done)?);
    println!("log: {}", log.log.trim_end());

    workers.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
    if done.exit_code == Some(0) {
        Ok(())
    } else {
        Err(format!("run ended with {:?}", done.exit_code).into())
    }
}
