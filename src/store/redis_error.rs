//! The one place where the Redis client's errors become the crate's own
//! [`RedisError`]: every `?` on a client call inside `store` goes through
//! [`From`] here, so no client library type leaves the store.

use fred::error::{Error as ClientError, ErrorKind as ClientKind};

use crate::error::{Error, RedisError, RedisErrorKind};

/// Error replies that mean "this Redis cannot serve right now", whatever the
/// command: retrying later is the answer.
const NOT_SERVING_YET: [&str; 6] = [
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "READONLY",
];

/// The kind of a client error (Redis' reply code first, then the client's
/// classification).
fn kind_of(e: &ClientError) -> RedisErrorKind {
    let code = e.details().split_whitespace().next().unwrap_or("");
    if code == "OOM" {
        return RedisErrorKind::OutOfMemory;
    }
    if NOT_SERVING_YET.contains(&code) {
        return RedisErrorKind::Unavailable;
    }
    match e.kind() {
        ClientKind::IO
        | ClientKind::Timeout
        | ClientKind::Canceled
        | ClientKind::Backpressure
        | ClientKind::Cluster
        | ClientKind::Routing
        | ClientKind::Sentinel => RedisErrorKind::Unavailable,
        ClientKind::Config
        | ClientKind::Auth
        | ClientKind::Url
        | ClientKind::Protocol
        | ClientKind::Parse
        | ClientKind::NotFound => RedisErrorKind::Client,
        _ => RedisErrorKind::Refused,
    }
}

/// The crate's description of a client error.
pub(crate) fn redis_error(e: &ClientError) -> RedisError {
    RedisError::new(kind_of(e), e.details())
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Redis(redis_error(&e))
    }
}

/// A call that was not sent because the connection is down (or the store is
/// going away): answered like any other outage.
pub(crate) fn unavailable(why: impl Into<String>) -> Error {
    Error::Redis(RedisError::new(RedisErrorKind::Unavailable, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(kind: ClientKind, details: &str) -> Error {
        ClientError::new(kind, details.to_string()).into()
    }

    #[test]
    fn an_unreachable_or_loading_redis_is_unavailable_and_transient() {
        for e in [
            mapped(ClientKind::IO, "connection refused"),
            mapped(ClientKind::Timeout, "Request timed out."),
            mapped(ClientKind::Canceled, "Redis connection is down"),
            mapped(
                ClientKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
            ),
            mapped(ClientKind::Unknown, "BUSY Redis is busy running a script"),
        ] {
            let Error::Redis(r) = &e else {
                panic!("{e:?} is not a Redis error");
            };
            assert_eq!(r.kind(), RedisErrorKind::Unavailable, "{e:?}");
            assert_eq!(e.code(), "REDIS_UNAVAILABLE");
            assert!(e.is_transient(), "{e:?}");
            assert!(!e.is_out_of_memory(), "{e:?}");
        }
    }

    #[test]
    fn an_oom_reply_is_out_of_memory_and_transient() {
        let e = mapped(
            ClientKind::Unknown,
            "OOM command not allowed when used memory > 'maxmemory'.",
        );
        assert!(e.is_out_of_memory());
        assert!(e.is_transient());
        assert_eq!(e.code(), "REDIS_UNAVAILABLE");
        let Error::Redis(r) = &e else {
            panic!("{e:?} is not a Redis error");
        };
        assert!(r.message().contains("OOM command not allowed"), "{r}");
    }

    #[test]
    fn other_replies_and_client_failures_keep_the_redis_code() {
        let wrong_type = mapped(
            ClientKind::InvalidArgument,
            "WRONGTYPE Operation against a key holding the wrong kind of value",
        );
        let auth = mapped(ClientKind::Auth, "WRONGPASS invalid username-password pair");
        let parse = mapped(ClientKind::Parse, "Could not convert to string.");
        for (e, kind) in [
            (&wrong_type, RedisErrorKind::Refused),
            (&auth, RedisErrorKind::Client),
            (&parse, RedisErrorKind::Client),
        ] {
            let Error::Redis(r) = e else {
                panic!("{e:?} is not a Redis error");
            };
            assert_eq!(r.kind(), kind, "{e:?}");
            assert_eq!(e.code(), "REDIS_UNAVAILABLE");
            assert!(e.is_transient());
            assert!(!e.is_out_of_memory());
        }
        assert!(
            wrong_type.to_string().starts_with("redis: refused: "),
            "{wrong_type}"
        );
    }
}
