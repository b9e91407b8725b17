//! Identifiers, parsed once where they enter the node (an API adapter) and
//! typed from there on: a [`TaskId`], [`AgentId`], [`WorkerId`] or
//! [`LeaseToken`] in a [`crate::queue::Queue`] call has been checked, so the
//! service does not check again. The rules live here and in
//! [`crate::task::validate_ident`]; the REST spec's patterns are these
//! constants (checked by a test of `api::rest::spec`). Complete and fail
//! take the store's batch items, shared with the in-node workers, and parse
//! their ids there.

use std::fmt;
use std::ops::Deref;

use crate::error::{Error, Result};
use crate::task::{DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS, validate_ident};

/// What an agent id, task type or idempotency key may contain.
pub const IDENT_PATTERN: &str = r"^[A-Za-z0-9_.-]+$";
/// What an owner or worker id (often an e-mail) may contain.
pub const OWNER_PATTERN: &str = r"^[A-Za-z0-9_.@+-]+$";
/// Longest task id: `task_` + ULID is 31; older or foreign ids up to 64.
pub const MAX_TASK_ID_LEN: usize = 64;
/// Longest lease token (`<ULID>.<attempt>`).
pub const MAX_LEASE_TOKEN_LEN: usize = 64;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// A task's id (`task_` + ULID for tasks this node creates).
    TaskId
);
id_type!(
    /// An agent's id: the queue its tasks wait in.
    AgentId
);
id_type!(
    /// The worker a lease is recorded for.
    WorkerId
);
id_type!(
    /// The fencing token of one attempt's lease.
    LeaseToken
);

impl TaskId {
    /// A string that cannot be a task id names no task: `TaskNotFound`, as
    /// for a well-formed id that does not exist.
    pub fn parse(s: &str) -> Result<Self> {
        validate_ident("task id", s, MAX_TASK_ID_LEN, &[])
            .map_err(|_| Error::TaskNotFound(s.to_string()))?;
        Ok(Self(s.to_string()))
    }
}

impl AgentId {
    /// 1 to 128 of `[A-Za-z0-9_.-]`; else a validation error.
    pub fn parse(s: &str) -> Result<Self> {
        validate_ident("agentId", s, DEFAULT_MAX_ID_LEN, &[])?;
        Ok(Self(s.to_string()))
    }

    /// An agent id to look up: a malformed one names no agent
    /// (`AgentNotFound`, as for a well-formed id without a record).
    pub fn named(s: &str) -> Result<Self> {
        Self::parse(s).map_err(|_| Error::AgentNotFound(s.to_string()))
    }
}

impl WorkerId {
    /// 1 to 128 of `[A-Za-z0-9_.@+-]`; else a validation error.
    pub fn parse(s: &str) -> Result<Self> {
        validate_ident("workerId", s, DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS)?;
        Ok(Self(s.to_string()))
    }
}

impl LeaseToken {
    /// 1 to 64 characters. Its content is the lease's to judge: a token that
    /// matches no lease is refused by the script (`LEASE_MISMATCH`).
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_LEASE_TOKEN_LEN {
            return Err(Error::Validation(format!(
                "token must be 1 to {MAX_LEASE_TOKEN_LEN} characters"
            )));
        }
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_task_id_is_not_found_and_a_good_one_parses() {
        for bad in ["", "a:b", "task_{x}", &"x".repeat(65)] {
            assert!(
                matches!(TaskId::parse(bad), Err(Error::TaskNotFound(_))),
                "{bad:?}"
            );
        }
        assert_eq!(TaskId::parse("task_01J").unwrap().as_str(), "task_01J");
    }

    #[test]
    fn agent_and_worker_ids_follow_their_patterns() {
        assert!(matches!(AgentId::parse("a@b"), Err(Error::Validation(_))));
        assert_eq!(&*AgentId::parse("echo.v-2").unwrap(), "echo.v-2");
        assert_eq!(WorkerId::parse("w+1@x.io").unwrap().to_string(), "w+1@x.io");
        assert!(matches!(WorkerId::parse("a b"), Err(Error::Validation(_))));
        assert!(matches!(LeaseToken::parse(""), Err(Error::Validation(_))));
    }

    #[test]
    fn the_patterns_say_what_the_parsers_accept() {
        let chars = |p: &str| {
            p.trim_start_matches("^[")
                .trim_end_matches("]+$")
                .to_string()
        };
        assert_eq!(chars(IDENT_PATTERN), "A-Za-z0-9_.-");
        assert_eq!(chars(OWNER_PATTERN), "A-Za-z0-9_.@+-");
        for c in ['@', '+'] {
            assert!(OWNER_EXTRA_CHARS.contains(&c));
        }
        assert_eq!(OWNER_EXTRA_CHARS.len(), 2);
    }
}
