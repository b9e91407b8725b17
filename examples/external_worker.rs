//! An external worker that speaks only HTTP: it long-polls for tasks of one
//! agent, heartbeats while it works, and completes (or fails) each task with
//! its lease token. Any language can do the same with the REST API.
//!
//! ```sh
//! JWT_SECRET=$(openssl rand -hex 32) scripts/dev serve           # one terminal
//! export TASKHERD_URL=http://127.0.0.1:4000
//! export WORKER_TOKEN=$(JWT_SECRET=<same> target/release/taskherd token --sub w1 --role worker --agent shout)
//! export USER_TOKEN=$(JWT_SECRET=<same> target/release/taskherd token --sub me --role user)
//! cargo run --example external_worker -- --once --submit "hello"
//! ```
//!
//! With `--submit TEXT` it first creates a task for agent `shout` (as the
//! user) so there is something to do; with `--once` it stops after one task.

use std::time::Duration;

use serde_json::{Value, json};

const AGENT: &str = "shout";
const LEASE_MS: u64 = 30_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("TASKHERD_URL").unwrap_or_else(|_| "http://127.0.0.1:4000".into());
    let worker_token = std::env::var("WORKER_TOKEN")?;
    let args: Vec<String> = std::env::args().collect();
    let once = args.iter().any(|a| a == "--once");
    let http = reqwest::Client::new();

    if let Some(i) = args.iter().position(|a| a == "--submit") {
        let text = args.get(i + 1).cloned().unwrap_or_else(|| "hello".into());
        let user_token = std::env::var("USER_TOKEN")?;
        let task: Value = http
            .post(format!("{base}/api/ai/tasks"))
            .bearer_auth(&user_token)
            .json(&json!({"agentId": AGENT, "taskType": "shout", "inputData": {"text": text}}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        println!("submitted {}", task["id"]);
    }

    loop {
        // Long-poll: the node answers as soon as a task is ready (or after 20 s).
        let claimed: Value = http
            .post(format!("{base}/api/ai/agents/{AGENT}/claim"))
            .bearer_auth(&worker_token)
            .json(&json!({"maxTasks": 1, "waitMs": 20_000, "leaseMs": LEASE_MS}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(task) = claimed["tasks"].as_array().and_then(|t| t.first()).cloned() else {
            continue;
        };
        let id = task["id"].as_str().unwrap_or_default().to_string();
        let token = task["token"].as_str().unwrap_or_default().to_string();
        println!("working on {id}");

        // Heartbeat every third of the lease while the work runs.
        let beat = {
            let (http, base, auth, id, token) = (
                http.clone(),
                base.clone(),
                worker_token.clone(),
                id.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(LEASE_MS / 3)).await;
                    let r = http
                        .post(format!("{base}/api/ai/tasks/{id}/heartbeat"))
                        .bearer_auth(&auth)
                        .json(&json!({"token": token, "leaseMs": LEASE_MS}))
                        .send()
                        .await;
                    if !r.is_ok_and(|r| r.status().is_success()) {
                        return; // lease lost or task cancelled: stop
                    }
                }
            })
        };

        let text = task["inputData"]["text"].as_str().unwrap_or("");
        let outcome = if text.is_empty() {
            http.post(format!("{base}/api/ai/tasks/{id}/fail"))
                .bearer_auth(&worker_token)
                .json(
                    &json!({"token": token, "errorMessage": "inputData.text is empty",
                              "retryable": false}),
                )
        } else {
            http.post(format!("{base}/api/ai/tasks/{id}/complete"))
                .bearer_auth(&worker_token)
                .json(
                    &json!({"token": token, "outputData": {"text": text.to_uppercase()},
                              "actualCost": 0.0, "qualityScore": 1.0}),
                )
        };
        let answer = outcome.send().await?;
        beat.abort();
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            println!("{id}: {} {}", body["status"], body["outputData"]);
        } else {
            // 409: the lease was lost (another worker has the task now).
            println!("{id}: refused ({status}): {}", body["error"]["message"]);
        }
        if once {
            return Ok(());
        }
    }
}
