//! Enqueue a task and wait for a node to finish it.
//!
//! ```sh
//! scripts/dev serve                               # in one terminal (note the redis URL it logs)
//! REDIS_URL=redis://127.0.0.1:PORT cargo run --example enqueue
//! ```

use std::time::Duration;

use taskherd::clock::Clock;
use taskherd::store::{Store, StoreConfig};
use taskherd::task::{NewTask, Priority};

#[tokio::main]
async fn main() -> taskherd::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = Store::connect(&url, 2, StoreConfig::default(), Clock::redis()).await?;

    let mut task = NewTask::new(
        "echo",
        "greet",
        serde_json::json!({ "text": "Hello", "to": "sw" }),
    );
    task.priority = Priority::High;
    task.idempotency_key = Some("example-greeting".into());
    let created = store.create(task).await?;
    println!(
        "{} created={} status={:?}",
        created.task.id, created.created, created.task.status
    );

    for _ in 0..100 {
        if let Some(task) = store.get(&created.task.id).await?
            && task.status.is_terminal()
        {
            println!(
                "{:?}: {}",
                task.status,
                serde_json::to_string(&task.output_data).unwrap_or_default()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("not finished yet: is a node with the echo agent running?");
    Ok(())
}
