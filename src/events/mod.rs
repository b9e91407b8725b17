//! Lifecycle events as the APIs see them: the typed [`Event`] (decoded in
//! `store`, the only code that knows the stream's encoding) and the node's
//! [`Hub`], which reads the stream once per node and fans it out in memory.

mod hub;

pub use crate::store::{Event, EventId, EventKind};
pub use hub::{DEFAULT_BUFFER, Delivery, Hub, Subscription};
