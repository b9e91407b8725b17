//! The access policy: every decision of who may do what, for every API.
//!
//! [`authorize`] answers one [`Action`] of one [`Principal`]. Where the
//! decision needs a task (read, change, run, subscribe to it), the action
//! carries the task's owner and agent ([`TaskRef`]); a task the caller may
//! not see is refused as [`Denied::Hidden`], which every API answers exactly
//! like a task that does not exist, so nothing leaks.
//!
//! [`Scope`] is the same visibility rule in a form a query or a script can
//! apply without reading each task first (list filters, a cancel whose
//! owner check runs inside its script, the event feed's per-event filter);
//! [`authorize`] itself decides per-task actions through it, so the rule is
//! written once.

use super::{Principal, Role};

/// The owner and agent of a task: what visibility depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRef<'a> {
    /// The principal that created it (none for library-created tasks).
    pub owner_id: Option<&'a str>,
    /// Its agent.
    pub agent_id: &'a str,
}

impl<'a> TaskRef<'a> {
    /// The reference of a stored task.
    pub fn of(task: &'a crate::task::Task) -> Self {
        Self {
            owner_id: task.owner_id.as_deref(),
            agent_id: &task.agent_id,
        }
    }
}

/// A room of the event feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room<'a> {
    /// One task's events.
    Task(TaskRef<'a>),
    /// One agent's tasks' events (each still filtered by [`Scope`]).
    Agent(&'a str),
    /// The queue's aggregate status.
    Queue,
}

/// What a caller asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Create tasks (owned by the caller).
    CreateTasks,
    /// List tasks (the page is scoped by [`Scope`]).
    ListTasks,
    /// Read one task.
    ReadTask(TaskRef<'a>),
    /// Cancel or retry tasks: the role may, whatever the task.
    ChangeTasks,
    /// Cancel or retry this task.
    ChangeTask(TaskRef<'a>),
    /// Claim the ready tasks of this agent.
    ClaimFrom(&'a str),
    /// Run tasks (start, heartbeat, complete, fail): the role may, whatever
    /// the task.
    RunTasks,
    /// Start, heartbeat, complete or fail a task of this agent.
    RunTask(&'a str),
    /// Aggregate views: queue status, statistics, agents, nodes.
    ReadQueue,
    /// Cleanup, timeout-stale, agent records.
    Administer,
    /// Scrape `/metrics`.
    ReadMetrics,
    /// Follow a room of the event feed.
    Subscribe(Room<'a>),
}

/// Why an action was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The role may not do this (403); the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// The task is not visible to the caller: answered as "not found".
    #[error("not found")]
    Hidden,
}

/// Which tasks a principal sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every task (admins).
    All,
    /// Tasks this subject owns (users).
    Owner(&'a str),
    /// Tasks of this agent (workers).
    Agent(&'a str),
    /// None (metrics scrapers).
    Nothing,
}

impl<'a> Scope<'a> {
    /// The tasks `principal` sees.
    pub fn of(principal: &'a Principal) -> Self {
        match principal.role {
            Role::Admin => Scope::All,
            Role::User => Scope::Owner(&principal.sub),
            Role::Worker => principal
                .agent
                .as_deref()
                .map_or(Scope::Nothing, Scope::Agent),
            Role::Metrics => Scope::Nothing,
        }
    }

    /// Whether a task is in this scope.
    pub fn admits(&self, task: TaskRef<'_>) -> bool {
        match *self {
            Scope::All => true,
            Scope::Owner(owner) => task.owner_id == Some(owner),
            Scope::Agent(agent) => task.agent_id == agent,
            Scope::Nothing => false,
        }
    }
}

fn forbidden(message: &str) -> Denied {
    Denied::Forbidden(message.to_string())
}

/// Whether `principal` may do `action`.
pub fn authorize(principal: &Principal, action: Action<'_>) -> Result<(), Denied> {
    let role = principal.role;
    let visible = |task: TaskRef<'_>| {
        if Scope::of(principal).admits(task) {
            Ok(())
        } else {
            Err(Denied::Hidden)
        }
    };
    match action {
        Action::CreateTasks | Action::ChangeTasks => match role {
            Role::Admin | Role::User => Ok(()),
            Role::Worker => Err(forbidden("worker tokens may only run their agent's tasks")),
            Role::Metrics => Err(forbidden("metrics tokens may not change tasks")),
        },
        Action::ChangeTask(task) => {
            authorize(principal, Action::ChangeTasks)?;
            visible(task)
        }
        Action::ListTasks => match role {
            Role::Metrics => Err(forbidden("metrics tokens may not read tasks")),
            _ => Ok(()),
        },
        Action::ReadTask(task) => visible(task),
        Action::ClaimFrom(agent) => match role {
            Role::Admin => Ok(()),
            Role::Worker if principal.agent.as_deref() == Some(agent) => Ok(()),
            Role::Worker => Err(Denied::Forbidden(format!(
                "this worker token is bound to another agent than {agent}"
            ))),
            Role::User | Role::Metrics => {
                Err(forbidden("running tasks needs a worker or admin token"))
            }
        },
        Action::RunTasks => match role {
            Role::Admin | Role::Worker => Ok(()),
            Role::User | Role::Metrics => {
                Err(forbidden("running tasks needs a worker or admin token"))
            }
        },
        // Another agent's task is "not found" to a worker, not forbidden: a
        // worker learns nothing about tasks it may not run.
        Action::RunTask(agent) => {
            authorize(principal, Action::RunTasks)?;
            match role {
                Role::Admin => Ok(()),
                _ if principal.agent.as_deref() == Some(agent) => Ok(()),
                _ => Err(Denied::Hidden),
            }
        }
        Action::ReadQueue => Ok(()),
        Action::Administer => match role {
            Role::Admin => Ok(()),
            _ => Err(forbidden("this operation needs the admin role")),
        },
        Action::ReadMetrics => match role {
            Role::Admin | Role::Metrics => Ok(()),
            _ => Err(forbidden("metrics need a metrics or admin token")),
        },
        Action::Subscribe(Room::Task(task)) => visible(task),
        Action::Subscribe(Room::Agent(agent)) => match role {
            Role::Admin | Role::User => Ok(()),
            Role::Worker if principal.agent.as_deref() == Some(agent) => Ok(()),
            Role::Worker => Err(Denied::Forbidden(format!(
                "this worker token is bound to another agent than {agent}"
            ))),
            Role::Metrics => Err(forbidden("metrics tokens may not follow tasks")),
        },
        Action::Subscribe(Room::Queue) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, sub: &str, agent: Option<&str>) -> Principal {
        Principal {
            sub: sub.into(),
            role,
            agent: agent.map(str::to_string),
        }
    }

    fn admin() -> Principal {
        principal(Role::Admin, "root", None)
    }
    fn alice() -> Principal {
        principal(Role::User, "alice", None)
    }
    fn echo_worker() -> Principal {
        principal(Role::Worker, "w1", Some("echo"))
    }
    fn scraper() -> Principal {
        principal(Role::Metrics, "prom", None)
    }

    const ALICES_ECHO_TASK: TaskRef<'static> = TaskRef {
        owner_id: Some("alice"),
        agent_id: "echo",
    };
    const BOBS_OTHER_TASK: TaskRef<'static> = TaskRef {
        owner_id: Some("bob"),
        agent_id: "other",
    };

    fn verdict(p: &Principal, a: Action<'_>) -> &'static str {
        match authorize(p, a) {
            Ok(()) => "ok",
            Err(Denied::Forbidden(_)) => "403",
            Err(Denied::Hidden) => "404",
        }
    }

    #[test]
    fn each_role_sees_its_own_scope_of_tasks() {
        for (p, own, other) in [
            (admin(), "ok", "ok"),
            (alice(), "ok", "404"),
            (echo_worker(), "ok", "404"),
            (scraper(), "404", "404"),
        ] {
            assert_eq!(
                verdict(&p, Action::ReadTask(ALICES_ECHO_TASK)),
                own,
                "{p:?}"
            );
            assert_eq!(
                verdict(&p, Action::ReadTask(BOBS_OTHER_TASK)),
                other,
                "{p:?}"
            );
            assert_eq!(
                verdict(&p, Action::Subscribe(Room::Task(BOBS_OTHER_TASK))),
                other,
                "{p:?}"
            );
        }
        let unowned = TaskRef {
            owner_id: None,
            agent_id: "echo",
        };
        assert_eq!(verdict(&alice(), Action::ReadTask(unowned)), "404");
    }

    #[test]
    fn changing_a_task_needs_a_submitter_role_before_visibility() {
        assert_eq!(
            verdict(&alice(), Action::ChangeTask(ALICES_ECHO_TASK)),
            "ok"
        );
        assert_eq!(
            verdict(&alice(), Action::ChangeTask(BOBS_OTHER_TASK)),
            "404"
        );
        // A worker is refused for its role even on its own agent's task.
        assert_eq!(
            verdict(&echo_worker(), Action::ChangeTask(ALICES_ECHO_TASK)),
            "403"
        );
        assert_eq!(verdict(&scraper(), Action::ChangeTasks), "403");
        assert_eq!(verdict(&admin(), Action::ChangeTask(BOBS_OTHER_TASK)), "ok");
    }

    #[test]
    fn workers_run_only_their_agent_and_claims_name_the_refusal() {
        assert_eq!(verdict(&echo_worker(), Action::RunTask("echo")), "ok");
        assert_eq!(verdict(&echo_worker(), Action::RunTask("other")), "404");
        assert_eq!(verdict(&echo_worker(), Action::ClaimFrom("other")), "403");
        assert_eq!(verdict(&alice(), Action::RunTask("echo")), "403");
        assert_eq!(verdict(&alice(), Action::ClaimFrom("echo")), "403");
        assert_eq!(verdict(&admin(), Action::RunTask("other")), "ok");
        assert_eq!(verdict(&admin(), Action::ClaimFrom("other")), "ok");
    }

    #[test]
    fn admin_and_metrics_actions_are_limited_to_their_roles() {
        for (p, administer, metrics, list) in [
            (admin(), "ok", "ok", "ok"),
            (alice(), "403", "403", "ok"),
            (echo_worker(), "403", "403", "ok"),
            (scraper(), "403", "ok", "403"),
        ] {
            assert_eq!(verdict(&p, Action::Administer), administer, "{p:?}");
            assert_eq!(verdict(&p, Action::ReadMetrics), metrics, "{p:?}");
            assert_eq!(verdict(&p, Action::ListTasks), list, "{p:?}");
            assert_eq!(verdict(&p, Action::ReadQueue), "ok", "{p:?}");
            assert_eq!(verdict(&p, Action::Subscribe(Room::Queue)), "ok", "{p:?}");
        }
    }

    #[test]
    fn agent_rooms_follow_the_run_rules_for_workers() {
        assert_eq!(
            verdict(&echo_worker(), Action::Subscribe(Room::Agent("echo"))),
            "ok"
        );
        assert_eq!(
            verdict(&echo_worker(), Action::Subscribe(Room::Agent("other"))),
            "403"
        );
        assert_eq!(
            verdict(&alice(), Action::Subscribe(Room::Agent("echo"))),
            "ok"
        );
        assert_eq!(
            verdict(&scraper(), Action::Subscribe(Room::Agent("echo"))),
            "403"
        );
    }

    #[test]
    fn scopes_admit_what_authorize_allows() {
        for p in [admin(), alice(), echo_worker(), scraper()] {
            for t in [ALICES_ECHO_TASK, BOBS_OTHER_TASK] {
                assert_eq!(
                    Scope::of(&p).admits(t),
                    authorize(&p, Action::ReadTask(t)).is_ok()
                );
            }
        }
    }
}
