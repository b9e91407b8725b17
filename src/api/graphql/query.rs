//! Queries: `aiTask`, `aiTasks`, `taskQueueStatus`, `taskStatistics`, over
//! the same service calls as REST.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    AgentGql, AgentsOnce, AiTask, Pagination, StatisticsFilter, TaskConnection, TaskFilter,
    TaskQueueStatus, TaskStatistics,
};
use super::{caller, service};
use crate::ids::TaskId;
use crate::store::{ListFilter, StatsFilter};

/// The query root.
pub(crate) struct Query;

#[Object]
impl Query {
    /// One task the caller may see; another's, like a missing one, is null.
    async fn ai_task(&self, ctx: &Context<'_>, id: ID) -> Result<Option<AiTask>> {
        let principal = caller(ctx)?;
        let Ok(id) = TaskId::parse(id.as_str()) else {
            return Ok(None);
        };
        match service(ctx).get(principal, &id).await {
            Ok(task) => Ok(Some(task.into())),
            Err(crate::Error::TaskNotFound(_)) => Ok(None),
            Err(e) => Err(super::error(e)),
        }
    }

    /// A page of the tasks the caller may see (users their own, workers
    /// their agent's, admins all), newest first, with the same filters and
    /// totals as `GET /api/ai/tasks`.
    async fn ai_tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<TaskFilter>,
        pagination: Option<Pagination>,
    ) -> Result<TaskConnection> {
        let principal = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let p = pagination.unwrap_or_default();
        let list = ListFilter {
            status: f.status.map(Into::into),
            priority: f.priority.map(Into::into),
            agent_id: f.agent_id,
            task_type: f.task_type,
            owner_id: None,
            created_from_ms: f.start_date.map(|t| t.0),
            created_to_ms: f.end_date.map(|t| t.0),
            page: p.page,
            limit: p.limit,
            cursor: p.cursor,
        };
        if !(1..=100).contains(&list.page) {
            return Err(super::error(crate::Error::Validation(
                "page must be 1 to 100 (deeper: follow pageInfo.nextCursor)".into(),
            )));
        }
        let page = service(ctx)
            .list(principal, list)
            .await
            .map_err(super::error)?;
        Ok(page.into())
    }

    /// Counts per status, priority and agent, oldest wait, health.
    async fn task_queue_status(&self, ctx: &Context<'_>) -> Result<TaskQueueStatus> {
        let principal = caller(ctx)?;
        let status = service(ctx)
            .queue_status(principal)
            .await
            .map_err(super::error)?;
        Ok(status.into())
    }

    /// Outcomes by agent and task type over whole UTC days (the REST
    /// statistics; they outlive task cleanup).
    async fn task_statistics(
        &self,
        ctx: &Context<'_>,
        filter: Option<StatisticsFilter>,
    ) -> Result<TaskStatistics> {
        let principal = caller(ctx)?;
        let f = filter.unwrap_or_default();
        let filter = StatsFilter {
            agent_id: f.agent_id,
            task_type: f.task_type,
            from_ms: f.start_date.map(|t| t.0),
            to_ms: f.end_date.map(|t| t.0),
        };
        let stats = service(ctx)
            .statistics(principal, &filter)
            .await
            .map_err(super::error)?;
        Ok(stats.into())
    }
}

/// The record of agent `id`. Every agent record is read once per request
/// over POST; over WebSocket (where a connection and its subscriptions
/// live long) the node's operations share one read, redone at most once a
/// second.
pub(super) async fn agent(ctx: &Context<'_>, id: &str) -> Result<Option<AgentGql>> {
    let principal = caller(ctx)?;
    let Some(once) = ctx.data_opt::<AgentsOnce>() else {
        let agents = ctx
            .data_unchecked::<super::Live>()
            .inner
            .agents(principal)
            .await
            .map_err(super::error)?;
        return Ok(agents.get(id).map(AgentGql::from));
    };
    let agents = once
        .0
        .get_or_try_init(|| async {
            let agents = service(ctx).agents(principal).await.map_err(super::error)?;
            Ok::<_, async_graphql::Error>(Arc::new(
                agents
                    .iter()
                    .map(|a| (a.id.clone(), AgentGql::from(a)))
                    .collect::<HashMap<_, _>>(),
            ))
        })
        .await?;
    Ok(agents.get(id).cloned())
}
