//! Every Redis key taskherd uses, one function each. The Lua twins live in
//! `keys_for` in `lua/lib/common.lua` (scripts derive keys from the prefix
//! they are given as KEYS[1], never elsewhere); a unit test below checks that
//! both name every key the same way, in both directions, and that no script
//! builds a key of its own.
//!
//! All keys start with `{<namespace>}:`, so they share one hash tag and one
//! Redis Cluster slot: a script may touch any of them. A deployment that
//! outgrows one primary runs several namespaces (partitions), each its own tag.

use crate::error::{Error, Result};
use crate::task::{Priority, TaskStatus, validate_ident};

/// A list index: a ZSET of task ids scored by order score (creation order),
/// one per filter value, read by `lua/list.lua`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Index<'a> {
    /// Every task (`idx:all`).
    All,
    /// Tasks of one status (`idx:status:<STATUS>`).
    Status(TaskStatus),
    /// Tasks of one priority (`idx:prio:<PRIORITY>`).
    Priority(Priority),
    /// Tasks of one agent (`idx:agent:<agentId>`).
    Agent(&'a str),
    /// Tasks of one task type (`idx:type:<taskType>`).
    TaskType(&'a str),
    /// Tasks of one owner (`idx:owner:<ownerId>`).
    Owner(&'a str),
}

impl Index<'_> {
    /// The index's name: what follows `idx:` in its key, and what `list.lua`
    /// takes as a filter argument (`status:QUEUED`, `agent:a1`).
    pub fn name(&self) -> String {
        match self {
            Index::All => "all".to_string(),
            Index::Status(s) => format!("status:{}", s.as_str()),
            Index::Priority(p) => format!("prio:{}", p.as_str()),
            Index::Agent(a) => format!("agent:{a}"),
            Index::TaskType(t) => format!("type:{t}"),
            Index::Owner(o) => format!("owner:{o}"),
        }
    }
}

/// Key builder for one namespace.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys of namespace `ns` (letters, digits, `_ . -`).
    pub fn new(namespace: &str) -> Result<Self> {
        validate_ident("namespace", namespace, 64, &[])
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            prefix: format!("{{{namespace}}}:"),
        })
    }

    /// `{ns}:` — KEYS[1] of every script.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// HASH: one task's record (fields named as in [`crate::task::Task`]).
    pub fn task(&self, id: &str) -> String {
        format!("{}task:{id}", self.prefix)
    }

    /// ZSET: ready tasks of one agent at one priority rank (0 = URGENT);
    /// member task id, score the order score (FIFO).
    pub fn ready(&self, agent: &str, rank: u8) -> String {
        format!("{}ready:{agent}:{rank}", self.prefix)
    }

    /// ZSET: QUEUED tasks waiting for runAt or retry backoff; score due ms.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// ZSET: leased tasks; score min(lease deadline, attempt deadline) ms.
    pub fn processing(&self) -> String {
        format!("{}processing", self.prefix)
    }

    /// ZSET: terminal tasks; score completedAt ms (the janitor's index).
    pub fn finished(&self) -> String {
        format!("{}finished", self.prefix)
    }

    /// STREAM: one entry per state change.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// STRING: the last order score issued (integer); every script that
    /// orders tasks takes its scores from it, so they strictly increase.
    pub fn clock(&self) -> String {
        format!("{}clock", self.prefix)
    }

    /// ZSET: a list index, member task id, score order score (see [`Index`]).
    pub fn index(&self, index: Index<'_>) -> String {
        self.index_named(&index.name())
    }

    /// ZSET: the list index of that name, as [`Index::name`] gives it (what
    /// `list.lua` derives from its filter arguments).
    pub fn index_named(&self, name: &str) -> String {
        format!("{}idx:{name}", self.prefix)
    }

    /// ZSET: `list.lua`'s scratch set, the intersection of several filters'
    /// indexes; written and deleted within one call.
    pub fn list_scratch(&self) -> String {
        format!("{}tmp:list", self.prefix)
    }

    /// STRING: the task id an idempotency key of an owner (`""` for none)
    /// maps to; expires after the idempotency TTL.
    pub fn idempotency(&self, owner: &str, key: &str) -> String {
        format!("{}idem:{owner}:{key}", self.prefix)
    }

    /// STRING: when a sleeping reaper passes next (ms, store clock), written
    /// by its pass (`reap.lua`); a script that grants an earlier lease or
    /// attempt deadline lowers it and signals `r`. Expires when no reaper
    /// renews it.
    pub fn reaper_wake(&self) -> String {
        format!("{}reaper:wake", self.prefix)
    }

    /// HASH: `<agent>|<STATUS>` -> number of live tasks.
    pub fn counts(&self) -> String {
        format!("{}counts", self.prefix)
    }

    /// SET: agent ids seen in tasks or agent records.
    pub fn agents(&self) -> String {
        format!("{}agents", self.prefix)
    }

    /// HASH: one agent's record (`record` = JSON, `createdAt`, `updatedAt`).
    pub fn agent(&self, id: &str) -> String {
        format!("{}agent:{id}", self.prefix)
    }

    /// Pub/sub channel: `w:<agent>` (work is ready), `c:<task>:<token>` (stop
    /// that attempt), `d` (a delayed task was added), `r` (a deadline before
    /// the reapers' next pass was granted).
    pub fn signal(&self) -> String {
        format!("{}signal", self.prefix)
    }

    /// HASH: statistics of one UTC day (days since the Unix epoch);
    /// fields `<agent>|<taskType>|<metric>`.
    pub fn stats(&self, day: i64) -> String {
        format!("{}stats:{day}", self.prefix)
    }

    /// HASH: `PROCESSING` / `QUEUED` -> the order score where the audit's
    /// walk of that status index resumes.
    pub fn audit(&self) -> String {
        format!("{}audit", self.prefix)
    }

    /// HASH: live nodes' heartbeats (`node id` -> JSON), maintained by nodes.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// HASH: requests a principal (token subject) made in one one-second
    /// window (Unix second): limiter id (one per node process) -> the count
    /// it admitted (`rate_sync.lua`); expires shortly after its window.
    /// (`rlh:`, not the `rl:` strings of earlier versions' INCRBY counts, so
    /// nodes of both versions during an upgrade do not meet a WRONGTYPE.)
    pub fn rate_limit(&self, window_s: u64, principal: &str) -> String {
        format!("{}rlh:{window_s}:{principal}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    #[test]
    fn every_key_carries_the_namespace_hash_tag() {
        let k = Keys::new("prod").unwrap();
        for key in [
            k.task("t"),
            k.ready("a", 0),
            k.events(),
            k.stats(1),
            k.signal(),
            k.clock(),
            k.index(Index::All),
            k.idempotency("o", "k"),
            k.list_scratch(),
            k.reaper_wake(),
            k.rate_limit(1, "sub"),
        ] {
            assert!(key.starts_with("{prod}:"), "{key}");
        }
        assert!(Keys::new("a{b}").is_err());
    }

    const COMMON_LUA: &str = include_str!("../../lua/lib/common.lua");
    const KEYS_RS: &str = include_str!("keys.rs");

    /// One key of `keys_for` in `lua/lib/common.lua`: its parameters and the
    /// parts its expression concatenates (`p`, a 'literal' or a parameter).
    #[derive(Debug)]
    struct LuaKey {
        params: Vec<String>,
        parts: Vec<String>,
    }

    impl LuaKey {
        /// The key Lua builds from `prefix` and `args`.
        fn build(&self, prefix: &str, args: &[&str]) -> String {
            assert_eq!(args.len(), self.params.len(), "{self:?}: arguments");
            self.parts
                .iter()
                .map(|part| {
                    if part == "p" {
                        prefix.to_string()
                    } else if let Some(literal) =
                        part.strip_prefix('\'').and_then(|s| s.strip_suffix('\''))
                    {
                        literal.to_string()
                    } else {
                        let i = self.params.iter().position(|p| p == part);
                        let i = i.unwrap_or_else(|| panic!("{self:?}: unknown part {part}"));
                        args[i].to_string()
                    }
                })
                .collect()
        }
    }

    /// The body of `keys_for` (between its first line and `return k`).
    fn keys_for_body(source: &str) -> &str {
        let start = source
            .find("local function keys_for(p)")
            .expect("common.lua defines keys_for(p)");
        let body = &source[start..];
        let end = body
            .find("\n  return k\nend")
            .expect("keys_for ends with return k");
        &body[..end]
    }

    /// Every key `keys_for` defines, by name. A line it cannot read fails
    /// the test, so no key can hide from the comparison.
    fn lua_keys() -> BTreeMap<String, LuaKey> {
        let parts = |expr: &str| -> Vec<String> {
            expr.split("..").map(|p| p.trim().to_string()).collect()
        };
        let mut keys = BTreeMap::new();
        for line in keys_for_body(COMMON_LUA).lines().skip(1) {
            let code = line.split("--").next().unwrap_or("").trim();
            if code.is_empty() || code == "local k = {" || code == "}" {
                continue;
            }
            let (name, key) = if let Some(rest) = code.strip_prefix("function k.") {
                let (name, rest) = rest.split_once('(').expect(line);
                let (params, rest) = rest.split_once(')').expect(line);
                let expr = rest
                    .trim()
                    .strip_prefix("return ")
                    .and_then(|e| e.strip_suffix(" end"))
                    .unwrap_or_else(|| panic!("cannot read: {line}"));
                let params = params
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
                (
                    name,
                    LuaKey {
                        params,
                        parts: parts(expr),
                    },
                )
            } else {
                let (name, expr) = code
                    .split_once(" = ")
                    .unwrap_or_else(|| panic!("cannot read: {line}"));
                let expr = expr.strip_suffix(',').unwrap_or(expr);
                (
                    name,
                    LuaKey {
                        params: Vec::new(),
                        parts: parts(expr),
                    },
                )
            };
            assert!(
                key.parts.first().is_some_and(|p| p == "p"),
                "{name} does not start with the prefix"
            );
            assert!(
                keys.insert(name.trim().to_string(), key).is_none(),
                "{name} twice"
            );
        }
        keys
    }

    /// The public functions of `impl Keys` in this file.
    fn rust_key_functions() -> BTreeSet<String> {
        let start = KEYS_RS.find("impl Keys {").expect("impl Keys");
        let end = start + KEYS_RS[start..].find("\n}\n").expect("end of impl Keys");
        KEYS_RS[start..end]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub fn "))
            .filter_map(|l| l.split('(').next())
            .map(str::to_string)
            .collect()
    }

    /// (Lua name, Rust function, arguments, the key Rust builds from them).
    fn twins(k: &Keys) -> Vec<(&'static str, &'static str, Vec<&'static str>, String)> {
        vec![
            ("delayed", "delayed", vec![], k.delayed()),
            ("processing", "processing", vec![], k.processing()),
            ("finished", "finished", vec![], k.finished()),
            ("events", "events", vec![], k.events()),
            ("clock", "clock", vec![], k.clock()),
            ("counts", "counts", vec![], k.counts()),
            ("agents", "agents", vec![], k.agents()),
            ("signal", "signal", vec![], k.signal()),
            ("audit", "audit", vec![], k.audit()),
            ("tmp_list", "list_scratch", vec![], k.list_scratch()),
            ("reaper_wake", "reaper_wake", vec![], k.reaper_wake()),
            ("task", "task", vec!["T1"], k.task("T1")),
            ("ready", "ready", vec!["A1", "3"], k.ready("A1", 3)),
            ("stats", "stats", vec!["20000"], k.stats(20_000)),
            ("agent", "agent", vec!["A1"], k.agent("A1")),
            (
                "rate_limit",
                "rate_limit",
                vec!["20000", "S1"],
                k.rate_limit(20_000, "S1"),
            ),
            (
                "idem",
                "idempotency",
                vec!["O1", "K1"],
                k.idempotency("O1", "K1"),
            ),
            ("idx_all", "index", vec![], k.index(Index::All)),
            (
                "idx_status",
                "index",
                vec!["QUEUED"],
                k.index(Index::Status(TaskStatus::Queued)),
            ),
            (
                "idx_prio",
                "index",
                vec!["HIGH"],
                k.index(Index::Priority(Priority::High)),
            ),
            (
                "idx_agent",
                "index",
                vec!["A1"],
                k.index(Index::Agent("A1")),
            ),
            (
                "idx_type",
                "index",
                vec!["Y1"],
                k.index(Index::TaskType("Y1")),
            ),
            (
                "idx_owner",
                "index",
                vec!["O1"],
                k.index(Index::Owner("O1")),
            ),
            (
                "idx",
                "index_named",
                vec!["status:FAILED"],
                k.index_named("status:FAILED"),
            ),
        ]
    }

    /// Keys only Rust uses (no script touches them).
    const RUST_ONLY: [&str; 1] = ["nodes"];

    #[test]
    fn lua_and_rust_name_every_key_the_same_way() {
        let k = Keys::new("ns").unwrap();
        let lua = lua_keys();
        let twins = twins(&k);
        // Every Lua key has a Rust twin that builds the same name ...
        for name in lua.keys() {
            assert!(
                twins.iter().any(|(l, ..)| l == name),
                "Lua key {name} has no twin in src/store/keys.rs"
            );
        }
        // ... and every Rust twin is a Lua key building the same name.
        for (lua_name, rust_fn, args, rust_key) in &twins {
            let key = lua
                .get(*lua_name)
                .unwrap_or_else(|| panic!("{rust_fn}: no Lua key {lua_name} in keys_for"));
            assert_eq!(
                &key.build(k.prefix(), args),
                rust_key,
                "Lua {lua_name} and Rust {rust_fn} differ"
            );
        }
        // Every key function of `Keys` is in the comparison or known to be
        // Rust's alone.
        let compared: BTreeSet<String> = twins
            .iter()
            .map(|(_, f, ..)| f.to_string())
            .chain(RUST_ONLY.iter().map(|f| f.to_string()))
            .chain(["new".to_string(), "prefix".to_string()])
            .collect();
        assert_eq!(rust_key_functions(), compared);
        for rust_only in RUST_ONLY {
            assert!(!lua.contains_key(rust_only), "{rust_only} is used by Lua");
        }
    }

    /// The lines of `source` (comments removed) that join the call's prefix
    /// `P` (or `KEYS[1]`) to something with `..`: keys built outside
    /// `keys_for`.
    fn keys_built_by_hand(source: &str) -> Vec<String> {
        source
            .lines()
            .map(|l| l.split("--").next().unwrap_or("").replace("..", " .. "))
            .filter(|code| {
                let tokens: Vec<&str> = code
                    .split(|c: char| c.is_whitespace() || "(),=".contains(c))
                    .filter(|t| !t.is_empty())
                    .collect();
                let prefix = |t: &str| t == "P" || t == "KEYS[1]";
                tokens
                    .windows(2)
                    .any(|w| (prefix(w[0]) && w[1] == "..") || (w[0] == ".." && prefix(w[1])))
            })
            .collect()
    }

    #[test]
    fn no_script_builds_a_key_outside_keys_for() {
        let body = keys_for_body(COMMON_LUA);
        let common_without_keys_for = COMMON_LUA.replace(body, "");
        for by_hand in [
            "src = P .. 'idx:' .. ARGV[7]",
            "local s = P..'tmp:list'",
            "call('DEL', 'x:' .. KEYS[1])",
        ] {
            assert_eq!(keys_built_by_hand(by_hand).len(), 1, "{by_hand}");
        }
        let mut sources = vec![
            ("lib/common.lua", common_without_keys_for),
            (
                "lib/attempt.lua",
                include_str!("../../lua/lib/attempt.lua").to_string(),
            ),
        ];
        for name in super::super::scripts::Name::ALL {
            sources.push((name.file_stem(), name.body().to_string()));
        }
        for (file, source) in sources {
            assert_eq!(
                keys_built_by_hand(&source),
                Vec::<String>::new(),
                "{file} builds keys by hand: use K.<key> from keys_for"
            );
        }
    }
}
