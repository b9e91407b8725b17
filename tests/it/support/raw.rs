//! Raw Redis access for tests that check (or damage) what the scripts wrote:
//! a connection of the test's own, opened from a Redis URL (the test's
//! `TestRedis::url()`, or `Store::redis_url()` to reach Redis the way that
//! store does, proxies included). The store itself exposes no client.

use std::ops::Deref;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::prelude::*;
use fred::types::config::{Config, ReconnectPolicy};

/// A connected client of the test's own; it closes its connection when
/// dropped. Every fred command interface is reachable through it.
pub struct RawRedis {
    client: Client,
}

impl Deref for RawRedis {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for RawRedis {
    fn drop(&mut self) {
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

fn builder(url: &str) -> Builder {
    let mut builder = Builder::from_config(Config::from_url(url).expect("a Redis URL"));
    builder
        .set_policy(ReconnectPolicy::new_constant(0, 50))
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(10);
        });
    builder
}

/// A client connected to the Redis at `url`.
pub async fn raw_redis(url: &str) -> RawRedis {
    let client = builder(url).build().expect("a Redis client");
    client.init().await.expect("raw Redis connection");
    RawRedis { client }
}

/// A subscriber to `channel` of the Redis at `url` (sees every message as
/// sent, for tests of what scripts publish).
pub async fn raw_subscriber(url: &str, channel: String) -> SubscriberClient {
    let subscriber = builder(url)
        .build_subscriber_client()
        .expect("a Redis subscriber");
    subscriber
        .init()
        .await
        .expect("raw Redis subscriber connects");
    subscriber.subscribe(channel).await.expect("SUBSCRIBE");
    subscriber
}
