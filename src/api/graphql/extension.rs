//! What every GraphQL operation goes through, over POST and WebSocket
//! alike: an error without a project code gets `VALIDATION_ERROR` (parse
//! and validation errors, depth and complexity limits, arguments of the
//! wrong type), and operations are counted by type and outcome, queries and
//! mutations timed. Subscriptions count themselves when they open or are
//! refused ([`super::subscription`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::futures_util::stream::BoxStream;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use futures::StreamExt;

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

/// Creates one [`Observed`] per operation.
pub(super) struct Observe;

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Observed::default())
    }
}

/// One operation's view: the types of the document's operations, by name.
#[derive(Default)]
struct Observed {
    operations: Mutex<Vec<(Option<String>, OperationType)>>,
    /// The operation came over POST (not WebSocket).
    posted: AtomicBool,
}

impl Observed {
    /// The type of the operation `name` runs (a query when unknown).
    fn kind(&self, name: Option<&str>) -> &'static str {
        let operations = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ty = match name {
            Some(name) => operations
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name))
                .map(|(_, ty)| *ty),
            None => operations.first().map(|(_, ty)| *ty),
        };
        match ty {
            Some(OperationType::Mutation) => "mutation",
            Some(OperationType::Subscription) => "subscription",
            _ => "query",
        }
    }
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

fn response_with_codes(mut r: Response) -> Response {
    r.errors = r.errors.into_iter().map(with_code).collect();
    r
}

#[async_graphql::async_trait::async_trait]
impl Extension for Observed {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        match next.run(ctx, query, variables).await {
            Ok(doc) => {
                let operations = match &doc.operations {
                    DocumentOperations::Single(op) => vec![(None, op.node.ty)],
                    DocumentOperations::Multiple(ops) => ops
                        .iter()
                        .map(|(name, op)| (Some(name.to_string()), op.node.ty))
                        .collect(),
                };
                *self
                    .operations
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = operations;
                Ok(doc)
            }
            Err(e) => {
                crate::metrics::graphql_operation("query", "error", None);
                Err(with_code(e))
            }
        }
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            crate::metrics::graphql_operation(self.kind(None), "error", None);
            errors.into_iter().map(with_code).collect()
        })
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        // Only operations over POST come through here.
        self.posted.store(true, Ordering::Relaxed);
        next.run(ctx).await
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let kind = self.kind(operation_name);
        // Each event of a WebSocket subscription runs through here too: the
        // subscription counted itself when it opened.
        let counted = kind != "subscription" || self.posted.load(Ordering::Relaxed);
        let started = Instant::now();
        // Queries and mutations over WebSocket are rate limited one by one
        // (subscriptions when they open).
        let throttled = match kind {
            "subscription" => Ok(()),
            _ => super::throttle(ctx.data_opt(), ctx.data_opt()).await,
        };
        let response = match throttled {
            Ok(()) => next.run(ctx, operation_name).await,
            Err(e) => Response::from_errors(vec![e.into_server_error(Default::default())]),
        };
        let response = response_with_codes(response);
        if counted {
            crate::metrics::graphql_operation(
                kind,
                outcome_of(&response.errors),
                Some(started.elapsed()),
            );
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(response_with_codes).boxed()
    }
}
