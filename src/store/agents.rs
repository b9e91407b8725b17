//! Agent records: how an agent's tasks run. Wrapper of `lua/agent_upsert.lua`
//! plus plain reads.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Name, Store};
use crate::error::{Error, Result};
use crate::task::validate_ident;

/// How an agent's tasks are executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentKind {
    /// A Rust `Handler` registered in the nodes' worker registry.
    Handler,
    /// The built-in HTTP executor POSTs each task to `endpoint`.
    Http,
    /// External workers claim its tasks over the API.
    #[default]
    External,
}

/// An agent record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agent {
    /// Agent id (the `agentId` tasks name).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Free-form type as in the seeds (`llm`, `translator` ...).
    #[serde(default, rename = "type")]
    pub agent_type: String,
    /// How its tasks run.
    #[serde(default)]
    pub kind: AgentKind,
    /// Endpoint of the HTTP executor (kind HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Most tasks of this agent one node runs at once (default: node limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

impl Agent {
    /// Checks the record before it is stored.
    pub fn validate(&self) -> Result<()> {
        validate_ident("agent id", &self.id, crate::task::DEFAULT_MAX_ID_LEN, &[])?;
        if self.name.len() > 256 || self.agent_type.len() > 64 {
            return Err(Error::Validation("name or type too long".into()));
        }
        if self.kind == AgentKind::Http {
            let ok = self
                .endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://") || e.starts_with("https://"));
            if !ok {
                return Err(Error::Validation(
                    "an HTTP agent needs an http(s) endpoint".into(),
                ));
            }
        }
        if self.concurrency == Some(0) {
            return Err(Error::Validation("concurrency must be at least 1".into()));
        }
        Ok(())
    }
}

impl Store {
    /// Creates or replaces an agent record; true when it was created.
    pub async fn upsert_agent(&self, agent: &Agent) -> Result<bool> {
        agent.validate()?;
        let record = serde_json::to_string(agent).map_err(|e| Error::Validation(e.to_string()))?;
        let value = self
            .call(
                Name::AgentUpsert,
                vec![self.now_arg(), agent.id.clone(), record],
            )
            .await?;
        Ok(super::reply::Reply {
            script: "agent_upsert",
        }
        .int(value)?
            == 1)
    }

    /// One agent's record.
    pub async fn get_agent(&self, id: &str) -> Result<Option<Agent>> {
        if validate_ident("agent id", id, crate::task::DEFAULT_MAX_ID_LEN, &[]).is_err() {
            return Ok(None);
        }
        let record: Option<String> = self.client().hget(self.keys().agent(id), "record").await?;
        record
            .map(|r| {
                serde_json::from_str(&r).map_err(|_| Error::Reply {
                    script: "agent record",
                    detail: format!("agent {id} record is not valid JSON"),
                })
            })
            .transpose()
    }

    /// Every agent with a record (agents only seen in tasks have none).
    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        let ids: Vec<String> = self.client().smembers(self.keys().agents()).await?;
        let mut agents = Vec::new();
        for id in ids {
            if let Some(agent) = self.get_agent(&id).await? {
                agents.push(agent);
            }
        }
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(agents)
    }

    /// Deletes an agent record (its tasks stay and keep waiting).
    pub async fn delete_agent(&self, id: &str) -> Result<bool> {
        if validate_ident("agent id", id, crate::task::DEFAULT_MAX_ID_LEN, &[]).is_err() {
            return Ok(false);
        }
        let n: i64 = self.client().del(self.keys().agent(id)).await?;
        Ok(n == 1)
    }
}
