//! What every GraphQL operation goes through, over POST and WebSocket
//! alike: an error without a project code gets `VALIDATION_ERROR` (parse
//! and validation errors, depth and complexity limits, arguments of the
//! wrong type), and operations are counted by type and outcome, queries and
//! mutations timed. Subscriptions count themselves when they open or are
//! refused ([`super::subscription`]).
//!
//! This wraps the executor rather than being an async-graphql extension:
//! with any extension registered, async-graphql runs every field of every
//! answer through the extension chain (about 18% of the throughput of a
//! 20-task list).

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Data, Executor, Request, Response, ServerError};
use futures::{FutureExt, StreamExt};

use super::TaskSchema;
use crate::auth::Principal;

/// The code of an error that has none: the request itself was refused.
const REQUEST_ERROR: &str = "VALIDATION_ERROR";
/// Codes that are the node's or Redis' fault, not the caller's.
const SERVER_CODES: [&str; 2] = ["INTERNAL", "REDIS_UNAVAILABLE"];

/// An operation's outcome for the metrics: `ok`, `error` (refused: the
/// caller's input, rights, or the task's state) or `internal` (the node or
/// Redis failed it).
pub(super) fn outcome<'a>(
    extensions: impl IntoIterator<Item = Option<&'a async_graphql::ErrorExtensionValues>>,
) -> &'static str {
    let mut outcome = "ok";
    for ext in extensions {
        let server = ext.and_then(|x| x.get("code")).is_some_and(|code| {
            matches!(code, async_graphql::Value::String(c) if SERVER_CODES.contains(&c.as_str()))
        });
        if server {
            return "internal";
        }
        outcome = "error";
    }
    outcome
}

fn outcome_of(errors: &[ServerError]) -> &'static str {
    outcome(errors.iter().map(|e| e.extensions.as_ref()))
}

fn with_code(mut e: ServerError) -> ServerError {
    let has_code = e
        .extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some());
    if !has_code {
        e.extensions
            .get_or_insert_with(Default::default)
            .set("code", REQUEST_ERROR);
    }
    e
}

/// `r` with a code on each of its errors.
pub(super) fn with_codes(mut r: Response) -> Response {
    if !r.errors.is_empty() {
        r.errors = r.errors.into_iter().map(with_code).collect();
    }
    r
}

/// Longest query text whose parse is kept (bytes): a pathological 2 KiB
/// text parses to some 200 KB.
const MAX_KEPT_QUERY: usize = 2048;
/// Parsed documents kept at most (all are dropped when full).
const MAX_KEPT: usize = 128;

/// The node's parsed documents by query text: clients send the same few
/// queries over and over, and parsing one costs more than running a
/// small one (an A/B run, 2026-12-04: `aiTask(id)` 11.2-11.5k against
/// 16.1-17.0k requests/s with them kept). Bounded in entries and in query
/// size; a query that does not parse is not kept.
#[derive(Default)]
pub(super) struct Documents {
    kept: Mutex<HashMap<String, Arc<ExecutableDocument>>>,
}

impl Documents {
    /// Gives `request` its parsed document: a kept one, or parses and
    /// keeps it.
    pub(super) fn prepare(&self, request: &mut Request) {
        if request.query.len() > MAX_KEPT_QUERY {
            return;
        }
        let kept = self.lock().get(&request.query).cloned();
        if let Some(doc) = kept {
            request.set_parsed_query((*doc).clone());
            return;
        }
        let Ok(doc) = request.parsed_query() else {
            return;
        };
        let doc = Arc::new(doc.clone());
        let mut kept = self.lock();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(request.query.clone(), doc);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ExecutableDocument>>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The type of the operation `request` runs (parsing it once, for the
/// executor too); a request that does not parse counts as a query.
pub(super) fn kind(request: &mut Request) -> &'static str {
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return "query";
    };
    let ty = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.get(name.as_str()).map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(ops), None) => ops.values().next().map(|op| op.node.ty),
    };
    match ty {
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        _ => "query",
    }
}

/// Runs a POST's operation on `schema`: codes, counts and times it.
pub(super) async fn execute(schema: &TaskSchema, mut request: Request) -> Response {
    let kind = kind(&mut request);
    let started = Instant::now();
    let response = with_codes(schema.execute(request).await);
    crate::metrics::graphql_operation(kind, outcome_of(&response.errors), Some(started.elapsed()));
    response
}

/// The schema as the WebSocket runs it: each query and mutation rate
/// limited, coded, counted and timed; each subscription's answers coded.
#[derive(Clone)]
pub(super) struct Observed(pub(super) TaskSchema, pub(super) Arc<Documents>);

fn session<T: Send + Sync + 'static>(data: &Option<Arc<Data>>) -> Option<&T> {
    data.as_ref()?.get(&TypeId::of::<T>())?.downcast_ref()
}

impl Executor for Observed {
    async fn execute(&self, request: Request) -> Response {
        execute(&self.0, request).await
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        self.1.prepare(&mut request);
        let kind = kind(&mut request);
        let schema = self.0.clone();
        if kind == "subscription" {
            // Rate limited when it opens; counted here when refused (by
            // validation or its resolver), by its resolver when it opens.
            return async move {
                let throttled = super::throttle(
                    session::<super::Throttled>(&session_data),
                    session::<Principal>(&session_data),
                )
                .await;
                if let Err(e) = throttled {
                    let refused = with_codes(Response::from_errors(vec![
                        e.into_server_error(Default::default()),
                    ]));
                    crate::metrics::graphql_operation(kind, outcome_of(&refused.errors), None);
                    return futures::stream::once(async { refused }).boxed();
                }
                let mut first = true;
                schema
                    .execute_stream_with_session_data(request, session_data.unwrap_or_default())
                    .map(move |r| {
                        let r = with_codes(r);
                        if std::mem::take(&mut first)
                            && !r.errors.is_empty()
                            && r.data == async_graphql::Value::Null
                        {
                            crate::metrics::graphql_operation(kind, outcome_of(&r.errors), None);
                        }
                        r
                    })
                    .boxed()
            }
            .flatten_stream()
            .boxed();
        }
        async move {
            let started = Instant::now();
            let throttled = super::throttle(
                session::<super::Throttled>(&session_data),
                session::<Principal>(&session_data),
            )
            .await;
            let response = match throttled {
                Ok(()) => {
                    let mut answers = schema.execute_stream_with_session_data(
                        request,
                        session_data.unwrap_or_default(),
                    );
                    answers.next().await.unwrap_or_default()
                }
                Err(e) => Response::from_errors(vec![e.into_server_error(Default::default())]),
            };
            let response = with_codes(response);
            crate::metrics::graphql_operation(
                kind,
                outcome_of(&response.errors),
                Some(started.elapsed()),
            );
            response
        }
        .into_stream()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_documents_are_reused_and_bounded() {
        let docs = Documents::default();
        let query = "query($id: ID!) { aiTask(id: $id) { id } }";
        let mut first = Request::new(query);
        docs.prepare(&mut first);
        assert_eq!(docs.lock().len(), 1);
        // The same text with another operation's variables: the kept parse.
        let mut again = Request::new(query).variables(async_graphql::Variables::from_json(
            serde_json::json!({"id": "task_x"}),
        ));
        docs.prepare(&mut again);
        assert_eq!(docs.lock().len(), 1);
        assert_eq!(kind(&mut again), "query");
        // Queries that do not parse, or are too long, are not kept.
        docs.prepare(&mut Request::new("{ not closed"));
        docs.prepare(&mut Request::new(format!(
            "{{ {} }}",
            "__typename ".repeat(MAX_KEPT_QUERY)
        )));
        assert_eq!(docs.lock().len(), 1);
        for i in 0..(2 * MAX_KEPT) {
            docs.prepare(&mut Request::new(format!("{{ a{i}: __typename }}")));
            assert!(docs.lock().len() <= MAX_KEPT);
        }
        let mut mutation = Request::new("mutation M { cancelAITask(id: \"t\") { id } }");
        docs.prepare(&mut mutation);
        assert_eq!(kind(&mut mutation), "mutation");
    }
}
