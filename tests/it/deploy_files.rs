//! The deployment files under `deploy/` checked by reading them (no Docker,
//! no cluster): they parse, they point at the health paths the API serves,
//! every setting they give a node is one `taskherd serve` knows and accepts,
//! the shutdown grace fits in the time the orchestrators allow, Redis is
//! configured for a queue, the Kubernetes objects select each other, and the
//! image is built the way `scripts/dev` builds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{Cli, Command as CliCommand};
use clap::{ArgAction, CommandFactory, Parser};
use serde::Deserialize;
use serde_norway::Value;

const LIVE: &str = "/api/ai/tasks/health/live";
const READY: &str = "/api/ai/tasks/health/ready";

/// A JWT secret long enough for the node, standing in for the operator's.
const TEST_SECRET: &str = "deploy-files-test-secret-0123456789abcdef";

/// Environment variables a node reads that are not `serve` flags.
const NON_FLAG_ENV: &[&str] = &["RUST_LOG"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every YAML document of a file, with `<<` merge keys applied.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel} does not parse: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
            value
        })
        .collect()
}

/// The one YAML document of a file.
fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel} should hold one YAML document");
    docs.remove(0)
}

/// `value[a][b]...` for a dotted path; Null when any step is missing.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| match v {
        Value::Mapping(m) => m.get(key).unwrap_or(&Value::Null),
        Value::Sequence(s) => key
            .parse::<usize>()
            .ok()
            .and_then(|i| s.get(i))
            .unwrap_or(&Value::Null),
        _ => &Value::Null,
    })
}

/// A scalar as text (numbers and booleans too).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_at(value: &Value, path: &str) -> String {
    text(at(value, path))
        .unwrap_or_else(|| panic!("{path} should be a scalar, is {:?}", at(value, path)))
}

fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `key: value` directives of a redis.conf (the last one of a key wins).
fn redis_directives(conf: &str) -> BTreeMap<String, String> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (key.to_ascii_lowercase(), value.trim().to_string())
        })
        .collect()
}

/// A Go / compose duration (`45s`, `1m30s`, `500ms`).
fn parse_duration(value: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut rest = value.trim();
    assert!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or_else(|| panic!("duration {value:?} needs a unit"));
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {value:?}"));
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "h" => Duration::from_secs(n * 3600),
            "m" => Duration::from_secs(n * 60),
            "s" => Duration::from_secs(n),
            "ms" => Duration::from_millis(n),
            "us" => Duration::from_micros(n),
            _ => panic!("unknown unit {unit:?} in duration {value:?}"),
        };
    }
    total
}

/// The environment of a compose service (mapping or list form); `None` for
/// a key given without a value (passed through from the operator's env).
fn compose_env(service: &Value) -> BTreeMap<String, Option<String>> {
    let env = at(service, "environment");
    match env {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| (text(k).expect("env key"), text(v)))
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = text(item).expect("env item");
                match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item, None),
                }
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Compose interpolation: `${NAME:?msg}` and `${NAME?msg}` take the value
/// from `vars` (they have no default), `${NAME:-default}` its default.
fn interpolate(value: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("unclosed ${{ in {value:?}"));
        let inner = &rest[start + 2..end];
        let name_end = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, modifier) = inner.split_at(name_end);
        let replacement = if let Some(default) = modifier.strip_prefix(":-") {
            default.to_string()
        } else {
            vars.get(name)
                .unwrap_or_else(|| panic!("no test value for ${{{name}}}"))
                .to_string()
        };
        out.push_str(&replacement);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The compose file's services.
fn compose() -> Value {
    yaml("deploy/docker-compose.yml")
}

/// The compose services running taskherd (built from deploy/Dockerfile).
fn compose_nodes(compose: &Value) -> BTreeMap<String, Value> {
    at(compose, "services")
        .as_mapping()
        .expect("compose services")
        .iter()
        .filter(|(_, s)| text(at(s, "build.dockerfile")).as_deref() == Some("deploy/Dockerfile"))
        .map(|(name, s)| (text(name).expect("service name"), s.clone()))
        .collect()
}

/// Sources and targets of a compose service's volumes (short or long form).
fn compose_mounts(service: &Value) -> Vec<(String, String)> {
    seq(at(service, "volumes"))
        .iter()
        .map(|v| match v {
            Value::String(s) => {
                let mut parts = s.split(':');
                (
                    parts.next().unwrap_or_default().to_string(),
                    parts.next().unwrap_or_default().to_string(),
                )
            }
            _ => (str_at(v, "source"), str_at(v, "target")),
        })
        .collect()
}

/// A Kubernetes manifest of deploy/k8s/ by file name.
fn k8s(file: &str) -> Value {
    yaml(&format!("deploy/k8s/{file}"))
}

/// The taskherd container of the Deployment.
fn k8s_container(deployment: &Value) -> &Value {
    let containers = seq(at(deployment, "spec.template.spec.containers"));
    containers
        .iter()
        .find(|c| str_at(c, "name") == "taskherd")
        .expect("a container named taskherd")
}

/// The env var names `taskherd serve --help` lists (`[env: NAME=...]`).
fn serve_help_env_names() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskherd"))
        .args(["serve", "--help"])
        .output()
        .expect("taskherd serve --help runs");
    assert!(out.status.success(), "taskherd serve --help failed");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    help.split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .collect()
}

/// Parses `env` the way the node would (each variable turned into its flag),
/// then runs the node's own settings check; the reason when it refuses.
fn serve_env(env: &BTreeMap<String, String>) -> Result<crate::cli::ServeArgs, String> {
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("serve subcommand")
        .clone();
    let args: Vec<clap::Arg> = cli
        .get_arguments()
        .chain(serve.get_arguments())
        .cloned()
        .collect();
    let mut argv = vec!["taskherd".to_string(), "serve".to_string()];
    for (name, value) in env {
        if NON_FLAG_ENV.contains(&name.as_str()) {
            continue;
        }
        let arg = args
            .iter()
            .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(name.as_str()))
            .ok_or_else(|| format!("{name} is not a setting of taskherd serve"))?;
        let long = arg.get_long().expect("settings have a long flag");
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            // clap reads a switch's env var as a bool: true or false only.
            match value.as_str() {
                "true" => argv.push(format!("--{long}")),
                "false" => {}
                other => return Err(format!("{name}={other:?}: a switch takes true or false")),
            }
        } else {
            argv.push(format!("--{long}={value}"));
        }
    }
    let parsed = Cli::try_parse_from(&argv).map_err(|e| format!("{argv:?}: {e}"))?;
    let CliCommand::Serve(serve_args) = parsed.command else {
        return Err("not a serve command".into());
    };
    serve_args.validate().map_err(|e| e.to_string())?;
    Ok(*serve_args)
}

fn check_serve_env(origin: &str, env: &BTreeMap<String, String>) -> crate::cli::ServeArgs {
    serve_env(env).unwrap_or_else(|e| panic!("{origin}: taskherd serve refuses its settings: {e}"))
}

/// Files with one of `exts` in `dir` (not recursive), relative names.
fn files_in(dir: &Path, exts: &[&str]) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
        })
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let mut files = Vec::new();
    walk(&root().join("deploy"), &mut files);
    let yaml_files: Vec<String> = files
        .iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yml" || e == "yaml")
        })
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        yaml_files.len() >= 12,
        "expected the compose, Grafana and Kubernetes files, found {yaml_files:?}"
    );
    for file in &yaml_files {
        let docs = yaml_docs(file);
        assert!(!docs.is_empty(), "{file} is empty");
        for doc in docs {
            assert!(
                doc.is_mapping(),
                "{file}: each document should be a mapping"
            );
        }
    }
}

#[test]
fn health_paths_are_the_ones_the_api_serves() {
    let health = read("src/api/rest/health.rs");
    for path in [LIVE, READY] {
        assert!(
            health.contains(&format!("path = \"{path}\"")),
            "src/api/rest/health.rs no longer serves {path}: update deploy/ and this test"
        );
    }
}

#[test]
fn compose_runs_redis_three_nodes_a_load_balancer_and_monitoring() {
    let compose = compose();
    let services: BTreeSet<String> = at(&compose, "services")
        .as_mapping()
        .expect("services")
        .keys()
        .filter_map(text)
        .collect();
    for name in [
        "redis",
        "node1",
        "node2",
        "node3",
        "lb",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(name), "compose has no service {name}");
    }
    let nodes = compose_nodes(&compose);
    assert_eq!(
        nodes.keys().cloned().collect::<Vec<_>>(),
        ["node1", "node2", "node3"],
        "the taskherd services"
    );

    let mut node_ids = BTreeSet::new();
    let mut images = BTreeSet::new();
    for (name, node) in &nodes {
        assert_eq!(str_at(node, "build.context"), "..", "{name}: build context");
        images.insert(str_at(node, "image"));
        let env = compose_env(node);
        assert_eq!(
            env.get("REDIS_URL").cloned().flatten().as_deref(),
            Some("redis://redis:6379"),
            "{name}: REDIS_URL"
        );
        let secret = env
            .get("JWT_SECRET")
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{name}: JWT_SECRET"));
        assert!(
            secret.starts_with("${JWT_SECRET:?"),
            "{name}: JWT_SECRET must come from the operator with no default, is {secret:?}"
        );
        let node_id = env
            .get("TASKHERD_NODE_ID")
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{name}: TASKHERD_NODE_ID"));
        assert!(
            node_ids.insert(node_id.clone()),
            "{name}: node id {node_id} is taken"
        );

        let grace_ms: u64 = env
            .get("TASKHERD_GRACE_MS")
            .cloned()
            .flatten()
            .map_or(30_000, |g| {
                g.parse().expect("TASKHERD_GRACE_MS is a number")
            });
        let stop = parse_duration(&str_at(node, "stop_grace_period"));
        assert!(
            stop > Duration::from_millis(grace_ms),
            "{name}: stop_grace_period {stop:?} must exceed TASKHERD_GRACE_MS {grace_ms} ms, \
             or Docker kills the node before in-flight tasks finish or are handed back"
        );

        let check: Vec<String> = seq(at(node, "healthcheck.test"))
            .iter()
            .filter_map(text)
            .collect();
        let check = check.join(" ");
        assert!(
            check.contains(READY) || check.contains(LIVE),
            "{name}: healthcheck {check:?} should probe {READY} or {LIVE}"
        );
        assert!(
            !at(node, "depends_on.redis").is_null(),
            "{name}: should start after redis"
        );
        assert!(
            at(node, "ports").is_null(),
            "{name}: nodes are reached through the load balancer, not published"
        );
    }
    assert_eq!(images.len(), 1, "one image for every node: {images:?}");

    // Redis: the production config, its data on a volume, never published.
    let redis = at(&compose, "services.redis");
    assert!(str_at(redis, "image").starts_with("redis:7"), "redis:7");
    assert!(at(redis, "ports").is_null(), "Redis must not be published");
    let mounts = compose_mounts(redis);
    let conf_target = mounts
        .iter()
        .find(|(source, _)| source == "./redis.conf")
        .map(|(_, target)| target.clone())
        .expect("redis mounts ./redis.conf");
    let command: Vec<String> = seq(at(redis, "command")).iter().filter_map(text).collect();
    assert!(
        command.contains(&conf_target),
        "redis runs with the mounted config: {command:?}"
    );
    let data_dir = command
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| command.get(i + 1))
        .expect("redis --dir");
    assert!(
        mounts
            .iter()
            .any(|(source, target)| target == data_dir && !source.starts_with('.')),
        "Redis' data folder {data_dir} should be a named volume"
    );

    // One address in front of the nodes: HAProxy on :4000, every node in
    // every backend, health-checked on readiness.
    let lb = at(&compose, "services.lb");
    let ports: Vec<String> = seq(at(lb, "ports")).iter().filter_map(text).collect();
    assert!(
        ports.iter().any(|p| p == "4000:4000"),
        "lb publishes 4000: {ports:?}"
    );
    let (lb_conf, _) = compose_mounts(lb)
        .into_iter()
        .find(|(_, target)| target.ends_with("haproxy.cfg"))
        .expect("lb mounts its haproxy.cfg");
    let haproxy = read(&format!("deploy/{}", lb_conf.trim_start_matches("./")));
    assert!(haproxy.contains("bind :4000"), "HAProxy listens on :4000");
    let backends: Vec<&str> = haproxy.split("\nbackend ").skip(1).collect();
    assert!(!backends.is_empty(), "HAProxy has backends");
    for backend in &backends {
        let name = backend.lines().next().unwrap_or_default();
        assert!(
            backend.contains(&format!("uri {READY}")),
            "backend {name} should check {READY}"
        );
        for node in nodes.keys() {
            assert!(
                backend.contains(&format!("server {node} {node}:4000")),
                "backend {name} lacks {node}"
            );
        }
    }
    assert!(
        haproxy.contains("timeout tunnel"),
        "upgraded (WebSocket) connections need a tunnel timeout"
    );

    // Monitoring: Prometheus reads its files from prometheus/, Grafana its
    // provisioning from here and its dashboards from prometheus/grafana/.
    let prom: Vec<String> = compose_mounts(at(&compose, "services.prometheus"))
        .into_iter()
        .map(|(source, _)| source)
        .collect();
    for source in ["../prometheus/prometheus.yml", "../prometheus/rules"] {
        assert!(
            prom.iter().any(|s| s == source),
            "prometheus mounts {source}"
        );
    }
    let grafana = compose_mounts(at(&compose, "services.grafana"));
    assert!(
        grafana
            .iter()
            .any(|(s, t)| s == "./grafana/provisioning" && t == "/etc/grafana/provisioning"),
        "grafana mounts ./grafana/provisioning"
    );
    let dashboards_target = grafana
        .iter()
        .find(|(s, _)| s == "../prometheus/grafana")
        .map(|(_, t)| t.clone())
        .expect("grafana mounts ../prometheus/grafana");
    let provider = yaml("deploy/grafana/provisioning/dashboards/taskherd.yml");
    assert_eq!(
        str_at(&provider, "providers.0.options.path"),
        dashboards_target,
        "the dashboard provider reads the mounted prometheus/grafana/"
    );
    let datasource = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(str_at(&datasource, "datasources.0.type"), "prometheus");
    assert_eq!(
        str_at(&datasource, "datasources.0.url"),
        "http://prometheus:9090"
    );
    assert!(
        str_at(
            &compose,
            "services.grafana.environment.GF_SECURITY_ADMIN_PASSWORD"
        )
        .starts_with("${GRAFANA_ADMIN_PASSWORD:?"),
        "no default Grafana password"
    );

    // Files of deploy/ that compose mounts exist (prometheus/ files come
    // from the monitoring work; secrets/ are made by the operator).
    for service in at(&compose, "services").as_mapping().unwrap().values() {
        for (source, _) in compose_mounts(service) {
            if let Some(rel) = source.strip_prefix("./")
                && !rel.starts_with("secrets/")
            {
                assert!(
                    root().join("deploy").join(rel).exists(),
                    "compose mounts deploy/{rel}, which does not exist"
                );
            }
        }
    }
    let ignored = read("deploy/.gitignore");
    for local in [".env", "secrets/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == local),
            "deploy/.gitignore keeps {local} out of git"
        );
    }
}

#[test]
fn redis_conf_is_configured_for_a_queue() {
    let conf = read("deploy/redis.conf");
    let d = redis_directives(&conf);
    let expect = [
        ("appendonly", "yes"),
        ("maxmemory-policy", "noeviction"),
        ("hash-max-listpack-value", "1024"),
        // Idle pub/sub connections of the nodes must not be closed.
        ("timeout", "0"),
    ];
    for (key, value) in expect {
        assert_eq!(
            d.get(key).map(String::as_str),
            Some(value),
            "redis.conf {key}"
        );
    }
    let fsync = d.get("appendfsync").map(String::as_str);
    assert!(
        matches!(fsync, Some("everysec" | "always")),
        "appendfsync everysec or always, is {fsync:?}"
    );
    let maxmemory = d.get("maxmemory").expect("redis.conf sets maxmemory");
    assert_ne!(
        maxmemory, "0",
        "a hard memory limit, so writes fail before the OOM killer acts"
    );
    for word in ["everysec", "always"] {
        assert!(
            conf.lines().any(|l| l.starts_with('#') && l.contains(word)),
            "redis.conf explains appendfsync {word}"
        );
    }
    assert_eq!(
        read("deploy/k8s/redis/redis.conf"),
        conf,
        "deploy/k8s/redis/redis.conf must stay a copy of deploy/redis.conf"
    );
}

/// Kills the redis-server child when the test ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One inline command to the Redis on 127.0.0.1:`port`; its reply.
fn redis_ask(port: u16, command: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// redis-server itself accepts deploy/redis.conf (Redis 7.0, the oldest 7.x
/// it may meet) and ends up with the settings taskherd needs. Only address
/// and folder are overridden, to keep the test private.
#[test]
fn redis_server_accepts_redis_conf() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = taskherd::local_redis::free_port().expect("free port");
    let conf = root().join("deploy/redis.conf");
    let child = std::process::Command::new("redis-server")
        .arg(&conf)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--protected-mode", "yes", "--dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts (install redis-server: scripts/dev test does)");
    let mut child = ChildGuard(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if redis_ask(port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("redis-server refused deploy/redis.conf ({status}); run it by hand to see why");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (key, value) in [
        ("appendonly", "yes"),
        ("maxmemory-policy", "noeviction"),
        ("hash-max-listpack-value", "1024"),
        ("timeout", "0"),
    ] {
        let reply = redis_ask(port, &format!("CONFIG GET {key}")).expect("CONFIG GET answers");
        assert!(
            reply.lines().any(|l| l == value),
            "CONFIG GET {key}: {reply:?}, expected {value}"
        );
    }
    let _ = redis_ask(port, "SHUTDOWN NOSAVE");
}

#[test]
fn node_settings_are_ones_taskherd_serve_knows_and_accepts() {
    let known = serve_help_env_names();
    for name in ["REDIS_URL", "JWT_SECRET", "TASKHERD_GRACE_MS", "PORT"] {
        assert!(known.contains(name), "serve --help lists {name}: {known:?}");
    }
    let is_known = |name: &str| known.contains(name) || NON_FLAG_ENV.contains(&name);

    // docker compose: every node's environment, with the operator's values
    // standing in for the ${...} that have no default.
    let vars = BTreeMap::from([("JWT_SECRET", TEST_SECRET)]);
    let compose = compose();
    for (name, node) in compose_nodes(&compose) {
        let mut env = BTreeMap::new();
        for (key, value) in compose_env(&node) {
            assert!(
                is_known(&key),
                "compose {name}: {key} is not a taskherd serve setting"
            );
            if let Some(value) = value {
                env.insert(key, interpolate(&value, &vars));
            }
        }
        let args = check_serve_env(&format!("compose {name}"), &env);
        assert_eq!(args.redis_url.as_deref(), Some("redis://redis:6379"));
    }

    // Kubernetes: the ConfigMap plus the Deployment's own env.
    let config = string_map(at(&k8s("configmap.yaml"), "data"));
    let deployment = k8s("deployment.yaml");
    let container = k8s_container(&deployment);
    let mut env = config.clone();
    for var in seq(at(container, "env")) {
        let name = str_at(var, "name");
        assert!(
            is_known(&name),
            "deployment: {name} is not a taskherd serve setting"
        );
        let value = match text(at(var, "value")) {
            Some(v) => v,
            None if name == "JWT_SECRET" => TEST_SECRET.to_string(),
            None => "from-the-downward-api".to_string(),
        };
        env.insert(name, value);
    }
    for key in config.keys() {
        assert!(
            is_known(key),
            "configmap: {key} is not a taskherd serve setting"
        );
    }
    let args = check_serve_env("k8s configmap + deployment", &env);
    assert!(args.redis_url.is_some(), "k8s sets REDIS_URL");

    // The Secret template's placeholder is refused, so an unedited template
    // cannot guard a cluster.
    let placeholder = str_at(&k8s("secret.yaml"), "stringData.JWT_SECRET");
    assert!(
        placeholder.len() < 32,
        "the template's JWT_SECRET must be a placeholder the node refuses (< 32 bytes)"
    );
    env.insert("JWT_SECRET".into(), placeholder);
    assert!(
        serve_env(&env).is_err(),
        "taskherd serve should refuse the placeholder secret"
    );
}

#[test]
fn k8s_deployment_probes_shutdown_grace_secret_and_security() {
    let deployment = k8s("deployment.yaml");
    let configmap = k8s("configmap.yaml");
    let secret = k8s("secret.yaml");
    let config = string_map(at(&configmap, "data"));
    assert_eq!(str_at(&deployment, "kind"), "Deployment");
    assert_eq!(str_at(&deployment, "spec.replicas"), "3");
    assert!(
        !config.contains_key("JWT_SECRET"),
        "JWT_SECRET belongs in the Secret, not the ConfigMap"
    );

    let container = k8s_container(&deployment);
    let port = seq(at(container, "ports"))
        .iter()
        .find(|p| str_at(p, "containerPort") == "4000")
        .expect("container port 4000");
    let port_name = text(at(port, "name"));
    assert_eq!(
        config.get("PORT").map(String::as_str).unwrap_or("4000"),
        "4000",
        "the node listens where the container port says"
    );
    let probe_port_ok = |probe: &str| {
        let p = text(at(container, &format!("{probe}.httpGet.port")))
            .unwrap_or_else(|| panic!("{probe} is an httpGet probe"));
        p == "4000" || Some(&p) == port_name.as_ref()
    };
    for (probe, path) in [("livenessProbe", LIVE), ("readinessProbe", READY)] {
        assert_eq!(
            str_at(container, &format!("{probe}.httpGet.path")),
            path,
            "{probe}"
        );
        assert!(probe_port_ok(probe), "{probe} on the container port");
    }
    if !at(container, "startupProbe").is_null() {
        assert_eq!(str_at(container, "startupProbe.httpGet.path"), LIVE);
        assert!(probe_port_ok("startupProbe"));
    }

    // Shutdown: preStop sleep, then SIGTERM and the grace period, all inside
    // terminationGracePeriodSeconds.
    let grace_ms: u64 = config.get("TASKHERD_GRACE_MS").map_or(30_000, |g| {
        g.parse().expect("TASKHERD_GRACE_MS is a number")
    });
    let pre_stop: Vec<String> = seq(at(container, "lifecycle.preStop.exec.command"))
        .iter()
        .filter_map(text)
        .collect();
    assert_eq!(
        pre_stop.first().map(String::as_str),
        Some("sleep"),
        "preStop sleeps"
    );
    let pre_stop_ms: u64 = pre_stop[1].parse::<u64>().expect("preStop seconds") * 1000;
    assert!(pre_stop_ms > 0, "preStop sleeps a few seconds");
    let termination_s: u64 = str_at(
        &deployment,
        "spec.template.spec.terminationGracePeriodSeconds",
    )
    .parse()
    .expect("terminationGracePeriodSeconds");
    assert!(
        termination_s * 1000 > pre_stop_ms + grace_ms,
        "terminationGracePeriodSeconds {termination_s} s must exceed preStop {pre_stop_ms} ms \
         + TASKHERD_GRACE_MS {grace_ms} ms"
    );

    // Settings: ConfigMap by envFrom, JWT_SECRET from the Secret.
    let config_ref = seq(at(container, "envFrom"))
        .iter()
        .filter_map(|e| text(at(e, "configMapRef.name")))
        .collect::<Vec<_>>();
    assert_eq!(
        config_ref,
        [str_at(&configmap, "metadata.name")],
        "envFrom the ConfigMap"
    );
    let jwt = seq(at(container, "env"))
        .iter()
        .find(|e| str_at(e, "name") == "JWT_SECRET")
        .expect("JWT_SECRET in env");
    assert!(
        at(jwt, "value").is_null(),
        "JWT_SECRET has no literal value"
    );
    assert_eq!(
        str_at(jwt, "valueFrom.secretKeyRef.name"),
        str_at(&secret, "metadata.name")
    );
    let key = str_at(jwt, "valueFrom.secretKeyRef.key");
    assert!(
        !at(&secret, &format!("stringData.{key}")).is_null(),
        "the Secret template has {key}"
    );

    // Non-root, read-only root file system, the image's user.
    let pod_security = at(&deployment, "spec.template.spec.securityContext");
    assert_eq!(str_at(pod_security, "runAsNonRoot"), "true");
    let uid = str_at(pod_security, "runAsUser");
    assert_ne!(uid, "0");
    let dockerfile = read("deploy/Dockerfile");
    let image_user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets USER");
    assert_eq!(
        image_user.split(':').next(),
        Some(uid.as_str()),
        "the pod runs as the image's user"
    );
    assert_eq!(
        str_at(container, "securityContext.readOnlyRootFilesystem"),
        "true"
    );
    assert_eq!(
        str_at(container, "securityContext.allowPrivilegeEscalation"),
        "false"
    );
    assert!(
        !at(container, "resources.requests.cpu").is_null(),
        "CPU request (HPA)"
    );
    assert!(
        !at(container, "resources.limits.memory").is_null(),
        "memory limit"
    );

    // Scraping.
    let annotations = string_map(at(&deployment, "spec.template.metadata.annotations"));
    assert_eq!(
        annotations.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        annotations.get("prometheus.io/port").map(String::as_str),
        Some("4000")
    );
    assert_eq!(
        annotations.get("prometheus.io/path").map(String::as_str),
        Some("/metrics")
    );
}

#[test]
fn k8s_service_pdb_hpa_and_redis_select_the_right_pods() {
    let deployment = k8s("deployment.yaml");
    let name = str_at(&deployment, "metadata.name");
    let labels = string_map(at(&deployment, "spec.template.metadata.labels"));
    let selects = |selector: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(
        selects(&string_map(at(&deployment, "spec.selector.matchLabels"))),
        "the Deployment selects its own pods"
    );

    let service = k8s("service.yaml");
    assert!(
        selects(&string_map(at(&service, "spec.selector"))),
        "Service selector"
    );
    let target = str_at(&service, "spec.ports.0.targetPort");
    assert!(
        target == "http" || target == "4000",
        "Service targets the HTTP port"
    );

    let pdb = k8s("pdb.yaml");
    assert_eq!(str_at(&pdb, "kind"), "PodDisruptionBudget");
    assert!(
        selects(&string_map(at(&pdb, "spec.selector.matchLabels"))),
        "PDB selector"
    );
    assert!(
        !at(&pdb, "spec.minAvailable").is_null() || !at(&pdb, "spec.maxUnavailable").is_null(),
        "PDB sets minAvailable or maxUnavailable"
    );

    let hpa = k8s("hpa.yaml");
    assert_eq!(str_at(&hpa, "apiVersion"), "autoscaling/v2");
    assert_eq!(str_at(&hpa, "spec.scaleTargetRef.kind"), "Deployment");
    assert_eq!(str_at(&hpa, "spec.scaleTargetRef.name"), name);
    let min: u32 = str_at(&hpa, "spec.minReplicas").parse().unwrap();
    assert!(
        min >= 2,
        "at least two pods, so a drain never empties the API"
    );
    assert!(
        seq(at(&hpa, "spec.metrics"))
            .iter()
            .any(|m| text(at(m, "resource.name")).as_deref() == Some("cpu")),
        "the HPA scales on CPU"
    );

    // The optional in-cluster Redis: the ConfigMap's REDIS_URL names its
    // Service, and its NetworkPolicy lets the taskherd pods in.
    let redis_service = yaml("deploy/k8s/redis/service.yaml");
    let redis_url = string_map(at(&k8s("configmap.yaml"), "data"))
        .remove("REDIS_URL")
        .expect("REDIS_URL");
    assert_eq!(
        redis_url,
        format!("redis://{}:6379", str_at(&redis_service, "metadata.name"))
    );
    let statefulset = yaml("deploy/k8s/redis/statefulset.yaml");
    let redis_labels = string_map(at(&statefulset, "spec.template.metadata.labels"));
    let redis_selector = string_map(at(&redis_service, "spec.selector"));
    assert!(
        redis_selector
            .iter()
            .all(|(k, v)| redis_labels.get(k) == Some(v)),
        "the redis Service selects the StatefulSet's pods"
    );
    let policy = yaml("deploy/k8s/redis/networkpolicy.yaml");
    assert!(
        seq(at(&policy, "spec.ingress.0.from"))
            .iter()
            .any(|from| selects(&string_map(at(from, "podSelector.matchLabels")))),
        "the NetworkPolicy admits the taskherd pods"
    );
    let command: Vec<String> = seq(at(&statefulset, "spec.template.spec.containers.0.command"))
        .iter()
        .filter_map(text)
        .collect();
    assert!(
        command.iter().any(|a| a.ends_with("redis.conf")),
        "redis runs with redis.conf: {command:?}"
    );
}

#[test]
fn kustomizations_list_every_manifest() {
    let k8s_dir = root().join("deploy/k8s");
    let kustomization = k8s("kustomization.yaml");
    let listed: BTreeSet<String> = seq(at(&kustomization, "resources"))
        .iter()
        .filter_map(text)
        .collect();
    let mut manifests = files_in(&k8s_dir, &["yaml", "yml"]);
    manifests.remove("kustomization.yaml");
    // The Secret template is applied by hand, never by `apply -k`: applying
    // it again would put its placeholder over the real secret.
    assert!(
        manifests.remove("secret.yaml"),
        "deploy/k8s/secret.yaml exists"
    );
    assert!(
        !listed.contains("secret.yaml"),
        "secret.yaml is not applied by kustomize"
    );
    assert_eq!(listed, manifests, "deploy/k8s/kustomization.yaml resources");

    let redis = yaml("deploy/k8s/redis/kustomization.yaml");
    let mut listed: BTreeSet<String> = seq(at(&redis, "resources"))
        .iter()
        .filter_map(text)
        .collect();
    for generator in seq(at(&redis, "configMapGenerator")) {
        listed.extend(seq(at(generator, "files")).iter().filter_map(text));
    }
    let mut files = files_in(&k8s_dir.join("redis"), &["yaml", "yml", "conf"]);
    files.remove("kustomization.yaml");
    assert_eq!(listed, files, "deploy/k8s/redis/kustomization.yaml");
    assert_eq!(
        str_at(&redis, "namespace"),
        str_at(&kustomization, "namespace"),
        "Redis and the nodes share a namespace"
    );
}

/// `--flags` of the `cargo <sub>` command on the first line of `text` that
/// also contains `marker`, up to a `--` separator or the end of the command.
fn cargo_flags(text: &str, sub: &str, marker: &str) -> Option<BTreeSet<String>> {
    let needle = format!("cargo {sub} ");
    let line = text
        .lines()
        .find(|l| l.contains(&needle) && l.contains(marker))?;
    let after = &line[line.find(&needle)? + needle.len()..];
    Some(
        after
            .split_whitespace()
            .take_while(|w| *w != "--" && *w != "&&" && *w != "\\")
            .filter(|w| w.starts_with("--"))
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn dockerfile_builds_like_scripts_dev_on_a_supported_rust() {
    let dockerfile = read("deploy/Dockerfile");
    // Instructions with their continuation lines joined.
    let instructions: Vec<String> = dockerfile
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");

    // Build stage: rust:X.Y-<debian>, at least Cargo.toml's rust-version.
    let build_image = froms[0].split_whitespace().nth(1).expect("build image");
    let (version, debian) = build_image
        .strip_prefix("rust:")
        .and_then(|t| t.split_once('-'))
        .expect("FROM rust:<version>-<debian release>");
    let numbers = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let needed = env!("CARGO_PKG_RUST_VERSION");
    assert!(!needed.is_empty(), "Cargo.toml declares rust-version");
    assert!(
        numbers(version) >= numbers(needed),
        "the build image's Rust {version} is older than rust-version {needed}"
    );
    let runtime_image = froms[1].split_whitespace().nth(1).expect("runtime image");
    assert_eq!(
        runtime_image,
        format!("debian:{debian}-slim"),
        "the runtime runs the Debian release the binary was built on (glibc)"
    );

    // The same cargo flags as `scripts/dev serve` (release, locked).
    let dev = read("scripts/dev");
    let dev_flags = cargo_flags(&dev, "run", "-- serve").expect("scripts/dev serve runs cargo run");
    assert!(
        dev_flags.contains("--release"),
        "scripts/dev serves a release build"
    );
    let builds: Vec<&String> = instructions
        .iter()
        .filter(|l| l.starts_with("RUN ") && l.contains("cargo build "))
        .collect();
    assert!(!builds.is_empty(), "the build stage runs cargo build");
    for run in &builds {
        let flags = cargo_flags(run, "build", "").unwrap();
        assert_eq!(flags, dev_flags, "Dockerfile `{run}` vs scripts/dev");
    }
    assert!(
        builds.last().unwrap().contains("target/release/taskherd"),
        "the image takes the release binary"
    );

    // What the build reads is copied in: the manifest, the lock file, src/,
    // and every file src/ includes at compile time (the Lua scripts).
    let copies: Vec<Vec<String>> = instructions
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .map(|l| {
            let words: Vec<String> = l.split_whitespace().skip(1).map(str::to_string).collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    let copied: BTreeSet<String> = copies.into_iter().flatten().collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.contains(needed), "the Dockerfile copies {needed}");
    }
    assert!(!root().join("build.rs").exists() || copied.contains("build.rs"));
    let mut sources = Vec::new();
    walk(&root().join("src"), &mut sources);
    for file in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let code = std::fs::read_to_string(file).unwrap();
        let pieces = ["include_str!(\"", "include_bytes!(\""]
            .into_iter()
            .flat_map(|mac| code.split(mac).skip(1));
        for piece in pieces {
            let rel = piece.split('"').next().unwrap();
            let included = file.parent().unwrap().join(rel);
            let included = included.canonicalize().unwrap_or(included);
            let top = included
                .strip_prefix(root())
                .ok()
                .and_then(|p| p.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                copied.contains(&top),
                "{} includes {rel} from {top}/, which the Dockerfile does not copy",
                file.display()
            );
        }
    }
    // The Dockerfile's own ignore file lets every copied path through.
    let ignore = read("deploy/Dockerfile.dockerignore");
    for path in &copied {
        assert!(
            ignore.lines().any(|l| {
                let l = l.trim();
                l.strip_prefix('!').map(|p| p.trim_end_matches('/')) == Some(path.as_str())
            }),
            "deploy/Dockerfile.dockerignore should let {path} into the build context"
        );
    }

    // Runtime: non-root, port 4000, `taskherd serve`, health-checked.
    let runtime: Vec<&String> = instructions.iter().skip_while(|l| *l != froms[1]).collect();
    let has = |prefix: &str| runtime.iter().any(|l| l.starts_with(prefix));
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "a numeric non-root USER (Kubernetes' runAsNonRoot checks it), is {user}"
    );
    assert!(has("EXPOSE 4000"));
    assert!(has(r#"ENTRYPOINT ["taskherd"]"#));
    assert!(has(r#"CMD ["serve"]"#));
    let healthcheck = runtime
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .expect("HEALTHCHECK");
    assert!(
        healthcheck.contains(LIVE),
        "the image's HEALTHCHECK probes {LIVE}"
    );
    let installs = runtime
        .iter()
        .find(|l| l.contains("apt-get install"))
        .expect("the runtime installs packages");
    for package in ["ca-certificates", "curl"] {
        assert!(
            installs.split_whitespace().any(|w| w == package),
            "the runtime installs {package}"
        );
    }
}
