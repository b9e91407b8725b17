//! `prometheus/`: promtool accepts the scrape configuration, the rules and
//! their unit tests; rules and dashboard read only series that exist; and a
//! real Prometheus scraping two real node processes computes the recording
//! rules without counting the shared queue twice.
//!
//! Needs `promtool` and `prometheus` on the PATH (Debian package
//! prometheus, 2.42 or later).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use serde_norway::Value as Yaml;
use taskherd::auth::Role;
use taskherd::metrics::names;

use crate::api_client::Api;
use crate::support::*;

/// Where the compose file mounts the scrape token (prometheus.yml reads it).
const TOKEN_PATH: &str = "/etc/prometheus/secrets/taskherd.token";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn prom_dir() -> PathBuf {
    root().join("prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Yaml {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `*.yml` files of a folder, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml files in {}", dir.display());
    files
}

/// Runs promtool in `cwd` and asserts exit 0, printing its output otherwise.
fn promtool(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("promtool runs (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn str_of<'a>(v: &'a Yaml, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

fn seq<'a>(v: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
}

/// Every rule of a rules file.
fn rules_of(path: &Path) -> Vec<Yaml> {
    let doc = yaml(path);
    seq(&doc["groups"], "groups")
        .iter()
        .flat_map(|g| seq(&g["rules"], "rules").clone())
        .collect()
}

fn recorded_names() -> BTreeSet<String> {
    rules_of(&prom_dir().join("rules/recording.yml"))
        .iter()
        .map(|r| str_of(&r["record"], "record").to_string())
        .collect()
}

/// The scrape configuration with the token file somewhere that exists, and
/// the rules next to it (rule_files is relative to the configuration).
fn config_copy(dir: &Path) -> PathBuf {
    let token = dir.join("taskherd.token");
    std::fs::write(&token, "not-a-real-token\n").unwrap();
    let original = read(&prom_dir().join("prometheus.yml"));
    assert!(
        original.contains(&format!("credentials_file: {TOKEN_PATH}")),
        "prometheus.yml reads the token from {TOKEN_PATH}"
    );
    let copy = dir.join("prometheus.yml");
    std::fs::write(&copy, original.replace(TOKEN_PATH, token.to_str().unwrap())).unwrap();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    for file in yml_files(&prom_dir().join("rules")) {
        std::fs::copy(&file, dir.join("rules").join(file.file_name().unwrap())).unwrap();
    }
    copy
}

/// The commented Kubernetes job of prometheus.yml, uncommented, in place of
/// the static taskherd job.
fn kubernetes_variant(config: &str, token_file: &str) -> String {
    let begin = config
        .find("  # --- kubernetes example begin ---")
        .expect("prometheus.yml has the Kubernetes example");
    let end = config
        .find("  # --- kubernetes example end ---")
        .expect("the Kubernetes example ends");
    let example: Vec<String> = config[begin..end]
        .lines()
        .skip_while(|l| !l.starts_with("  # - job_name:"))
        .map(|l| {
            let l = l
                .strip_prefix("  # ")
                .unwrap_or_else(|| panic!("not a commented line: {l:?}"));
            format!("  {l}")
        })
        .collect();
    assert!(!example.is_empty(), "the example has a job");
    let job = config
        .find("  - job_name: taskherd")
        .expect("the static taskherd job");
    format!(
        "{}{}\n{}",
        &config[..job],
        example.join("\n"),
        &config[end..]
    )
    .replace("/etc/prometheus/secrets/taskherd/token", token_file)
}

#[test]
fn promtool_accepts_the_config_the_rules_and_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_copy(dir.path());
    let out = promtool(dir.path(), &["check", "config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SUCCESS: 2 rule files found"),
        "rule_files finds the rules: {text}"
    );

    // The Kubernetes example is valid too. Debian's promtool is built without
    // Kubernetes discovery: then its relabelling is checked on static targets.
    let k8s = kubernetes_variant(
        &read(&config),
        dir.path().join("taskherd.token").to_str().unwrap(),
    );
    let k8s_path = dir.path().join("kubernetes.yml");
    std::fs::write(&k8s_path, &k8s).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config", k8s_path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("field kubernetes_sd_configs not found") {
        let sd = "    kubernetes_sd_configs:\n      - role: pod\n        namespaces:\n          names: [taskherd]\n";
        assert!(k8s.contains(sd), "the example discovers pods:\n{k8s}");
        std::fs::write(
            &k8s_path,
            k8s.replace(
                sd,
                "    static_configs:\n      - targets: [\"10.0.0.1:4000\"]\n",
            ),
        )
        .unwrap();
        promtool(dir.path(), &["check", "config", k8s_path.to_str().unwrap()]);
    } else {
        assert!(
            out.status.success(),
            "promtool check config (Kubernetes example): {}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let rules: Vec<String> = yml_files(&prom_dir().join("rules"))
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    promtool(&root(), &args);

    let tests: Vec<String> = yml_files(&prom_dir().join("tests"))
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    promtool(&root(), &args);
}

/// Identifiers in a PromQL expression that name taskherd series (quoted
/// label values left out).
fn taskherd_series(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::new();
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                unquoted.push(' ');
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                unquoted.push(' ');
            }
            None => unquoted.push(c),
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("taskherd_") || t.starts_with("taskherd:"))
        .map(str::to_string)
        .collect()
}

/// Every series a rule or panel may read: what nodes export (with the
/// histogram suffixes) and what the recording rules write.
fn known_series() -> BTreeSet<String> {
    let mut known = recorded_names();
    for name in names::ALL {
        for suffix in ["", "_bucket", "_sum", "_count"] {
            known.insert(format!("{name}{suffix}"));
        }
    }
    known
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_exprs(dashboard: &Json) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

/// The dashboard's query variables, `label_values(<selector>, <label>)`, as
/// (selector, label).
fn dashboard_variables(dashboard: &Json) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["query"]["query"].as_str())
        .map(|q| {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {q}: label_values(<selector>, <label>)"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            (selector.trim().to_string(), label.trim().to_string())
        })
        .collect()
}

fn dashboard() -> Json {
    serde_json::from_str(&read(&prom_dir().join("grafana/taskherd.json")))
        .expect("the dashboard is JSON")
}

#[test]
fn rules_and_dashboard_read_only_series_that_exist() {
    let known = known_series();
    let check = |origin: &str, expr: &str| {
        for series in taskherd_series(expr) {
            assert!(
                known.contains(&series),
                "{origin} reads {series}, which no node exports and no recording rule writes: {expr}"
            );
        }
    };
    for file in yml_files(&prom_dir().join("rules")) {
        for rule in rules_of(&file) {
            let name = rule["record"]
                .as_str()
                .or(rule["alert"].as_str())
                .unwrap()
                .to_string();
            check(&name, str_of(&rule["expr"], "expr"));
        }
    }
    for record in recorded_names() {
        assert!(
            record.starts_with("taskherd:"),
            "{record}: level:metric:operations"
        );
    }

    // Alerts: a severity, a summary and a runbook, a `for`; and each has a
    // unit test where it fires and one where it does not.
    let alerts = rules_of(&prom_dir().join("rules/alerts.yml"));
    assert!(alerts.len() >= 7, "{} alerts", alerts.len());
    let tests = yaml(&prom_dir().join("tests/alerts_test.yml"));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in seq(&tests["tests"], "tests") {
        for t in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = str_of(&t["alertname"], "alertname").to_string();
            if t["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for alert in &alerts {
        let name = str_of(&alert["alert"], "alert");
        let severity = str_of(&alert["labels"]["severity"], "severity");
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity}"
        );
        for annotation in ["summary", "runbook"] {
            assert!(
                !str_of(&alert["annotations"][annotation], annotation).is_empty(),
                "{name} has a {annotation}"
            );
        }
        assert!(alert["for"].as_str().is_some(), "{name} has a for");
        assert!(fires.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }

    // The dashboard: unique panel ids inside the 24-column grid, every query
    // on the datasource variable whose default is the provisioned uid, every
    // series known.
    let dash = dashboard();
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        let id = panel["id"].as_u64().unwrap();
        assert!(ids.insert(id), "panel id {id} twice");
        let pos = &panel["gridPos"];
        assert!(
            pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
            "panel {id} leaves the grid"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {id}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {id}");
        }
    }
    for expr in dashboard_exprs(&dash) {
        check("the dashboard", &expr);
    }
    let variables = dashboard_variables(&dash);
    assert!(
        variables.iter().any(|(_, l)| l == "job") && variables.iter().any(|(_, l)| l == "agent"),
        "job and agent variables: {variables:?}"
    );
    for (selector, _) in &variables {
        check("a dashboard variable", selector);
    }
    let provisioned = root().join("deploy/grafana/provisioning/datasources/prometheus.yml");
    if provisioned.exists() {
        let uid = str_of(
            &yaml(&provisioned)["datasources"][0]["uid"],
            "datasource uid",
        )
        .to_string();
        let var = dash["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["type"] == "datasource")
            .expect("a datasource variable");
        assert_eq!(
            var["current"]["value"], uid,
            "the dashboard defaults to the provisioned datasource"
        );
    }
}

/// Long or short compose volume syntax: (source, target).
fn compose_mounts(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| match v.as_str() {
            Some(short) => {
                let mut parts = short.split(':');
                (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            }
            None => (
                v["source"].as_str().unwrap_or("").to_string(),
                v["target"].as_str().unwrap_or("").to_string(),
            ),
        })
        .collect()
}

#[test]
fn the_config_matches_the_compose_and_kubernetes_files() {
    let config = yaml(&prom_dir().join("prometheus.yml"));
    let job = seq(&config["scrape_configs"], "scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "taskherd")
        .expect("a scrape job named taskherd (the alerts select job=\"taskherd\")");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    assert_eq!(job["authorization"]["type"], "Bearer");
    let credentials = str_of(
        &job["authorization"]["credentials_file"],
        "credentials_file",
    );
    assert_eq!(
        seq(&config["rule_files"], "rule_files")
            .iter()
            .map(|r| str_of(r, "rule file"))
            .collect::<Vec<_>>(),
        ["rules/*.yml"]
    );

    let compose_path = root().join("deploy/docker-compose.yml");
    if compose_path.exists() {
        let compose = yaml(&compose_path);
        let service = &compose["services"]["prometheus"];
        let mounts = compose_mounts(service);
        let target_of = |source: &str| {
            mounts
                .iter()
                .find(|(s, _)| s == source)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("compose's prometheus mounts {source}"))
        };
        let config_target = target_of("../prometheus/prometheus.yml");
        let config_dir = Path::new(&config_target).parent().unwrap();
        assert_eq!(
            Path::new(&target_of("../prometheus/rules")),
            config_dir.join("rules"),
            "rule_files (rules/*.yml) is relative to the config file"
        );
        assert!(
            mounts.iter().any(|(_, t)| t == credentials),
            "compose mounts the scrape token at {credentials}: {mounts:?}"
        );
        let command: Vec<&str> = seq(&service["command"], "command")
            .iter()
            .map(|c| str_of(c, "command"))
            .collect();
        assert!(
            command.contains(&format!("--config.file={config_target}").as_str()),
            "prometheus reads {config_target}: {command:?}"
        );
        let targets: Vec<&str> = seq(&job["static_configs"][0]["targets"], "targets")
            .iter()
            .map(|t| str_of(t, "target"))
            .collect();
        let nodes: Vec<String> = compose["services"]
            .as_mapping()
            .unwrap()
            .iter()
            .filter(|(_, s)| s["environment"]["TASKHERD_NODE_ID"].is_string())
            .map(|(name, _)| format!("{}:4000", name.as_str().unwrap()))
            .collect();
        assert!(!nodes.is_empty(), "compose has nodes");
        for node in &nodes {
            assert!(targets.contains(&node.as_str()), "node {node} is scraped");
        }
    }

    // The Kubernetes example keeps the pods deploy/k8s labels and annotates.
    let deployment = root().join("deploy/k8s/deployment.yaml");
    if deployment.exists() {
        let d = yaml(&deployment);
        let meta = &d["spec"]["template"]["metadata"];
        assert_eq!(meta["labels"]["app.kubernetes.io/name"], "taskherd");
        assert_eq!(meta["annotations"]["prometheus.io/scrape"], "true");
        let text = read(&prom_dir().join("prometheus.yml"));
        assert!(
            text.contains("__meta_kubernetes_pod_label_app_kubernetes_io_name]")
                && text.contains("__meta_kubernetes_pod_annotation_prometheus_io_port]"),
            "the example selects on the deployment's label and annotations"
        );
    }
}

/// A Prometheus server of this test's own, killed on drop (also on panic).
struct PromServer {
    child: std::process::Child,
    base: String,
    log: PathBuf,
}

impl PromServer {
    fn start(config: &Path, data: &Path, log: PathBuf) -> Self {
        let port = taskherd::local_redis::free_port().expect("free port");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("prometheus runs (Debian package prometheus)");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// An instant query: (labels, value) per series; None while Prometheus
    /// does not answer. Panics on a query error.
    async fn query(&self, q: &str) -> Option<Vec<(BTreeMap<String, String>, f64)>> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let resp = client
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?;
        let body: Json = resp.json().await.ok()?;
        assert_eq!(body["status"], "success", "query {q}: {body}");
        let result = body["data"]["result"].as_array()?;
        Some(
            result
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect();
                    let value = s["value"][1].as_str().unwrap().parse().unwrap();
                    (labels, value)
                })
                .collect(),
        )
    }

    /// The values of `q` once `ok` accepts them; panics with the last answer
    /// and Prometheus' log after `deadline`.
    async fn eventually(
        &self,
        q: &str,
        deadline: Duration,
        ok: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool,
    ) -> Vec<(BTreeMap<String, String>, f64)> {
        let end = Instant::now() + deadline;
        let mut last = None;
        loop {
            if let Some(v) = self.query(q).await {
                if ok(&v) {
                    return v;
                }
                last = Some(v);
            }
            if Instant::now() > end {
                panic!(
                    "timed out after {deadline:?} waiting for {q}; last answer {last:?}\nprometheus log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `q` answers exactly one series, with `value`.
    async fn single(&self, q: &str, value: f64) {
        self.eventually(q, Duration::from_secs(30), |v| {
            v.len() == 1 && v[0].1 == value
        })
        .await;
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's scrape job, pointed at `targets` on loopback, with 1 s
/// scrapes and evaluations and the repository's rule files.
fn live_config(targets: &[String], token_file: &Path) -> String {
    let mut config = yaml(&prom_dir().join("prometheus.yml"));
    let global = &mut config["global"];
    global["scrape_interval"] = "1s".into();
    global["scrape_timeout"] = "1s".into();
    global["evaluation_interval"] = "1s".into();
    config["rule_files"] = Yaml::Sequence(vec![
        prom_dir().join("rules/*.yml").to_str().unwrap().into(),
    ]);
    let mut job = seq(&config["scrape_configs"], "scrape_configs")
        .iter()
        .find(|j| j["job_name"] == "taskherd")
        .unwrap()
        .clone();
    job["authorization"]["credentials_file"] = token_file.to_str().unwrap().into();
    job["static_configs"] = serde_norway::from_str(&format!(
        "- targets: [{}]",
        targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .unwrap();
    config["scrape_configs"] = Yaml::Sequence(vec![job]);
    serde_norway::to_string(&config).unwrap()
}

async fn task_status(api: &Api, id: &str) -> String {
    api.get(&format!("/api/ai/tasks/{id}")).await.expect(200)["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn prometheus_counts_the_shared_queue_of_two_nodes_once() {
    const N: usize = 5; // echo tasks created through node A
    const M: usize = 3; // echo tasks created through node B
    const K: usize = 4; // tasks of an agent no worker serves
    let redis = TestRedis::start();
    let a = ChildNode::spawn(&redis.url(), &[]);
    let mut b = ChildNode::spawn(&redis.url(), &[]);
    for node in [&a, &b] {
        wait_until("child node answers", Duration::from_secs(20), || async {
            node.health().await.map(|_| ())
        })
        .await;
    }
    let base = |n: &ChildNode| format!("http://127.0.0.1:{}", n.port);
    let user_a = Api::at(base(&a), token("alice", Role::User, None));
    let user_b = Api::at(base(&b), token("alice", Role::User, None));

    // Both nodes run the demo agent echo: they complete all N + M between them.
    let mut echo = Vec::new();
    for (api, count) in [(&user_a, N), (&user_b, M)] {
        for i in 0..count {
            let t = api
                .create(json!({"agentId": "echo", "taskType": "greet", "inputData": {"i": i}}))
                .await;
            echo.push(t["id"].as_str().unwrap().to_string());
        }
    }
    for i in 0..K {
        let api = if i % 2 == 0 { &user_a } else { &user_b };
        api.create(json!({"agentId": "unserved", "taskType": "t", "priority": "HIGH"}))
            .await;
    }
    for id in &echo {
        wait_until("echo task completes", Duration::from_secs(20), || {
            let api = user_a.clone();
            async move { (task_status(&api, id).await == "COMPLETED").then_some(()) }
        })
        .await;
    }

    // Prometheus with the repository's job and rules, scraping both nodes.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("taskherd.token");
    std::fs::write(&token_file, token("prometheus", Role::Metrics, None)).unwrap();
    let targets = [a.port, b.port].map(|p| format!("127.0.0.1:{p}"));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, live_config(&targets, &token_file)).unwrap();
    let prom = PromServer::start(
        &config,
        &dir.path().join("data"),
        dir.path().join("prometheus.log"),
    );

    prom.eventually(r#"up{job="taskherd"} == 1"#, Duration::from_secs(30), |v| {
        v.len() == 2
    })
    .await;
    // Every node reports the whole queue ...
    let total = (N + M) as f64;
    let per_node = prom
        .eventually(
            r#"taskherd_queue_tasks{agent="echo", status="COMPLETED"}"#,
            Duration::from_secs(30),
            |v| v.len() == 2 && v.iter().all(|(_, x)| *x == total),
        )
        .await;
    assert_eq!(per_node.len(), 2);
    // ... so a plain sum counts it twice, and the recording rules once.
    prom.single(
        r#"sum(taskherd_queue_tasks{agent="echo", status="COMPLETED"})"#,
        2.0 * total,
    )
    .await;
    prom.single(
        r#"taskherd:queue_tasks:max{job="taskherd", agent="echo", status="COMPLETED"}"#,
        total,
    )
    .await;
    let k = K as f64;
    prom.eventually(
        r#"taskherd_queue_ready_tasks{agent="unserved", priority="HIGH"}"#,
        Duration::from_secs(30),
        |v| v.len() == 2 && v.iter().all(|(_, x)| *x == k),
    )
    .await;
    prom.single(
        r#"taskherd:queue_ready:max{agent="unserved", priority="HIGH"}"#,
        k,
    )
    .await;
    prom.single(r#"taskherd:queue_ready_per_agent:max{agent="unserved"}"#, k)
        .await;
    prom.single(r#"taskherd:queue_ready_per_agent:max{agent="echo"}"#, 0.0)
        .await;
    prom.single("taskherd:queue_ready_all:max", k).await;
    prom.eventually(
        r#"taskherd:queue_oldest_waiting_seconds:max{agent="unserved"}"#,
        Duration::from_secs(30),
        |v| v.len() == 1 && v[0].1 > 0.0,
    )
    .await;

    // Per-node counters: each node counted its own creates; the sum is the
    // cluster's. Completions sum to N + M whichever node ran them.
    let created = prom
        .eventually(
            r#"sum by (instance) (taskherd_tasks_created_total{agent="echo"})"#,
            Duration::from_secs(30),
            |v| v.len() == 2,
        )
        .await;
    let by_instance: BTreeMap<String, f64> = created
        .into_iter()
        .map(|(l, v)| (l["instance"].clone(), v))
        .collect();
    assert_eq!(
        by_instance,
        BTreeMap::from([
            (targets[0].clone(), N as f64),
            (targets[1].clone(), M as f64)
        ])
    );
    prom.single(r#"sum(taskherd_tasks_created_total{agent="echo"})"#, total)
        .await;
    prom.single(
        r#"sum(taskherd_tasks_completed_total{agent="echo"})"#,
        total,
    )
    .await;
    prom.single(r#"taskherd:worker_slots:sum{job="taskherd"}"#, 20.0)
        .await;

    // An agent with ready tasks and no starts: TaskherdNoWorkerForAgent is
    // pending (it fires after its `for`); echo, with nothing ready, is not.
    let pending = prom
        .eventually(
            r#"ALERTS{alertname="TaskherdNoWorkerForAgent"}"#,
            Duration::from_secs(30),
            |v| !v.is_empty(),
        )
        .await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0["agent"], "unserved");
    assert_eq!(pending[0].0["alertstate"], "pending");

    // Every rule evaluates without error on real data.
    let client = reqwest::Client::new();
    let rule_count = recorded_names().len() + rules_of(&prom_dir().join("rules/alerts.yml")).len();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let answer: Json = client
            .get(format!("{}/api/v1/rules", prom.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rules: Vec<&Json> = answer["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), rule_count, "Prometheus loaded every rule");
        if rules.iter().all(|r| r["health"] != "unknown") {
            for r in &rules {
                assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
            }
            break;
        }
        assert!(
            Instant::now() < end,
            "rules not all evaluated: {answer}\n{}",
            prom.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every dashboard query is valid PromQL (with its variables filled in
    // as Grafana would) and the variables find the job and the agents.
    let dash = dashboard();
    for expr in dashboard_exprs(&dash) {
        let q = expr.replace("$job", "taskherd").replace("$agent", ".*");
        prom.query(&q)
            .await
            .unwrap_or_else(|| panic!("no answer to {q}"));
    }
    for (selector, label) in dashboard_variables(&dash) {
        let q = format!(
            "count by ({label}) ({})",
            selector.replace("$job", "taskherd")
        );
        let want = match label.as_str() {
            "job" => vec!["taskherd"],
            _ => vec!["echo", "unserved"],
        };
        prom.eventually(&q, Duration::from_secs(30), |v| {
            let got: Vec<&str> = v.iter().map(|(l, _)| l[&label].as_str()).collect();
            want.iter().all(|w| got.contains(w))
        })
        .await;
    }

    // A node goes away: its scrape fails (up 0, TaskherdNodeDown pending)
    // and the queue is still counted once, from the node that is left.
    b.kill9();
    let down = prom
        .eventually(r#"up{job="taskherd"} == 0"#, Duration::from_secs(30), |v| {
            v.len() == 1
        })
        .await;
    assert_eq!(down[0].0["instance"], targets[1]);
    prom.eventually(
        r#"ALERTS{alertname="TaskherdNodeDown", alertstate="pending"}"#,
        Duration::from_secs(30),
        |v| v.len() == 1 && v[0].0["instance"] == targets[1],
    )
    .await;
    prom.single(
        r#"sum(taskherd_queue_tasks{agent="echo", status="COMPLETED"})"#,
        total,
    )
    .await;
    prom.single(
        r#"taskherd:queue_tasks:max{agent="echo", status="COMPLETED"}"#,
        total,
    )
    .await;
}
