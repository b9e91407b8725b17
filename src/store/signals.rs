//! The namespace's signal channel ([`super::keys::Keys::signal`]): scripts
//! PUBLISH `w:<agent>` when work becomes ready, `c:<task>:<token>` when that
//! attempt must stop (cancelled, reaped, timed out), `d` when a delayed
//! task was added and `r` when a deadline was granted before the reapers'
//! next pass. [`SignalSubscription`] is one subscriber on a connection
//! of its own, decoding them into [`Signal`]s; what they wake up is
//! `crate::signals`.

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::Store;
use crate::error::Result;

/// One thing the signal channel said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Work may be ready for this agent (`w:<agent>`).
    Work(String),
    /// This attempt must stop (`c:<task>:<token>`).
    Stop {
        /// The task.
        task_id: String,
        /// The attempt's lease token.
        token: String,
    },
    /// A delayed task was added (`d`).
    Delayed,
    /// A lease or attempt deadline was granted before the reapers' planned
    /// next pass (`r`): they should plan again.
    Reap,
    /// The connection was re-established: signals published meanwhile are
    /// lost, so everything should look again.
    Reconnected,
    /// This subscriber fell behind and dropped signals: everything should
    /// look again.
    Lagged,
}

impl Signal {
    /// The signal a channel message carries (`None` for one this version does
    /// not know).
    fn decode(message: &str) -> Option<Signal> {
        if let Some(agent) = message.strip_prefix("w:") {
            Some(Signal::Work(agent.to_string()))
        } else if let Some(rest) = message.strip_prefix("c:") {
            let (task, token) = rest.split_once(':')?;
            Some(Signal::Stop {
                task_id: task.to_string(),
                token: token.to_string(),
            })
        } else if message == "d" {
            Some(Signal::Delayed)
        } else if message == "r" {
            Some(Signal::Reap)
        } else {
            None
        }
    }
}

/// A subscription to the signal channel on its own connection, which
/// reconnects (and resubscribes) by itself; [`Signal::Reconnected`] says
/// when it did.
pub struct SignalSubscription {
    subscriber: SubscriberClient,
    manager: JoinHandle<()>,
    messages: broadcast::Receiver<Message>,
    reconnects: broadcast::Receiver<fred::types::config::Server>,
}

impl Store {
    /// Opens a connection of its own and subscribes to the signal channel.
    pub async fn subscribe_signals(&self) -> Result<SignalSubscription> {
        let subscriber = super::redis_builder(&self.inner.redis_url)?.build_subscriber_client()?;
        let set_up = async {
            subscriber.init().await?;
            subscriber.subscribe(self.keys().signal()).await
        };
        if let Err(e) = set_up.await {
            let _ = subscriber.quit().await;
            return Err(e.into());
        }
        let manager = subscriber.manage_subscriptions();
        let messages = subscriber.message_rx();
        let reconnects = subscriber.reconnect_rx();
        Ok(SignalSubscription {
            subscriber,
            manager,
            messages,
            reconnects,
        })
    }
}

impl SignalSubscription {
    /// The next signal; `None` once the subscription has ended. Cancel-safe:
    /// nothing is lost when the future is dropped before it answers.
    pub async fn next(&mut self) -> Option<Signal> {
        loop {
            tokio::select! {
                message = self.messages.recv() => match message {
                    Ok(m) => {
                        if let Some(signal) = m.value.as_str().and_then(|text| Signal::decode(&text)) {
                            return Some(signal);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Some(Signal::Lagged),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                reconnect = self.reconnects.recv() => match reconnect {
                    Ok(_) => return Some(Signal::Reconnected),
                    Err(broadcast::error::RecvError::Lagged(_)) => return Some(Signal::Reconnected),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    /// Unsubscribes and closes the connection.
    pub async fn close(self) {
        self.manager.abort();
        let _ = self.subscriber.quit().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_decode_into_signals() {
        assert_eq!(Signal::decode("w:a1"), Some(Signal::Work("a1".into())));
        assert_eq!(
            Signal::decode("c:task_1:tok.3"),
            Some(Signal::Stop {
                task_id: "task_1".into(),
                token: "tok.3".into()
            })
        );
        assert_eq!(Signal::decode("d"), Some(Signal::Delayed));
        assert_eq!(Signal::decode("r"), Some(Signal::Reap));
        assert_eq!(Signal::decode("c:no-token"), None);
        assert_eq!(Signal::decode("x"), None);
    }
}
