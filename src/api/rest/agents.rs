//! Agent records and the list of live nodes.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::error::{Errors, status as s};
use super::models::{AgentBody, AgentInput, AgentList, ApiTags, NodeList};
use super::{AppState, BearerAuth};
use crate::ids::AgentId;

pub(super) struct AgentsApi;

/// 201 for a new agent, 200 for an update.
#[derive(ApiResponse)]
enum PutAgentResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<AgentBody>),
    /// Updated.
    #[oai(status = 200)]
    Updated(Json<AgentBody>),
}

/// 204 when deleted.
#[derive(ApiResponse)]
enum DeleteAgentResponse {
    /// Deleted (its tasks stay and keep waiting).
    #[oai(status = 204)]
    Deleted,
}

#[OpenApi(tag = "ApiTags::Agents")]
impl AgentsApi {
    /// List agents
    ///
    /// Every agent with a record. Agents only named by tasks have none; they
    /// show up in queue status.
    #[oai(path = "/api/ai/agents", method = "get", operation_id = "listAgents")]
    async fn list(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
    ) -> Result<Json<AgentList>, Errors<{ s::AUTHED }>> {
        Ok(Json(AgentList {
            agents: state
                .queue
                .agents(&principal)
                .await?
                .into_iter()
                .map(AgentBody::from)
                .collect(),
        }))
    }

    /// Get an agent
    #[oai(path = "/api/ai/agents/:id", method = "get", operation_id = "getAgent")]
    async fn get(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Agent id.
        id: Path<String>,
    ) -> Result<Json<AgentBody>, Errors<{ s::AUTHED | s::NOT_FOUND }>> {
        Ok(Json(
            state
                .queue
                .agent(&principal, &AgentId::named(&id.0)?)
                .await?
                .into(),
        ))
    }

    /// Create or update an agent (admin)
    ///
    /// `kind` says how its tasks run: HANDLER (a Rust handler registered in
    /// the nodes), HTTP (the built-in executor posts each task to `endpoint`)
    /// or EXTERNAL (workers claim over this API). Nodes pick changes up
    /// within seconds.
    #[oai(path = "/api/ai/agents/:id", method = "put", operation_id = "putAgent")]
    async fn put(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Agent id (letters, digits, `_ . -`).
        #[oai(validator(pattern = r"^[A-Za-z0-9_.-]+$", min_length = 1, max_length = 128))]
        id: Path<String>,
        body: Json<AgentInput>,
    ) -> Result<PutAgentResponse, Errors<{ s::WITH_BODY | s::FORBIDDEN }>> {
        let agent = body.0.into_agent(id.0);
        let created = state.queue.put_agent(&principal, &agent).await?;
        Ok(if created {
            PutAgentResponse::Created(Json(agent.into()))
        } else {
            PutAgentResponse::Updated(Json(agent.into()))
        })
    }

    /// Delete an agent (admin)
    ///
    /// Removes the record; the agent's tasks stay and keep waiting.
    #[oai(
        path = "/api/ai/agents/:id",
        method = "delete",
        operation_id = "deleteAgent"
    )]
    async fn delete(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
        /// Agent id.
        id: Path<String>,
    ) -> Result<DeleteAgentResponse, Errors<{ s::AUTHED | s::FORBIDDEN | s::NOT_FOUND }>> {
        state
            .queue
            .delete_agent(&principal, &AgentId::named(&id.0)?)
            .await?;
        Ok(DeleteAgentResponse::Deleted)
    }

    /// Live nodes
    ///
    /// Every node that reported in the last 15 seconds, with its roles and
    /// its workers' counters.
    #[oai(
        path = "/api/ai/nodes",
        method = "get",
        operation_id = "listNodes",
        tag = "ApiTags::Monitoring"
    )]
    async fn nodes(
        &self,
        BearerAuth(principal): BearerAuth,
        Data(state): Data<&Arc<AppState>>,
    ) -> Result<Json<NodeList>, Errors<{ s::AUTHED }>> {
        let nodes = state.queue.nodes(&principal).await?;
        Ok(Json(NodeList::from(nodes)))
    }
}
