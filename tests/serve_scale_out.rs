//! `caption serve` as replicas sharing a real PostgreSQL (jobs, requests, feedback) and a real
//! Redis (result cache, rate limits, job queue), some requests through nginx with
//! deploy/nginx.conf. Each replica is a child process, so that one can be killed with SIGKILL.
//! The servers come from the machine's packages (`.ci/run` installs them); elsewhere these tests
//! are reported as ignored.

use caption_serve_testkit as common;
use caption_serve_testkit::servers::{Nginx, PostgresServer, RedisServer, ServeProcess, free_port, nginx_config};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

/// A registry with the tiny model promoted, and an API key for it.
struct Deployment {
    dir: tempfile::TempDir,
    registry: PathBuf,
    key: String,
}

impl Deployment {
    fn new() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let registry = common::registry_with_tiny_model(dir.path());
        let key = add_key(&registry, "researcher");
        Deployment { dir, registry, key }
    }

    /// A serve.yaml with `settings` (YAML) in the deployment's folder; no rate limit unless
    /// `settings` has one (the tests poll).
    fn config(&self, name: &str, settings: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.yaml"));
        let rate_limit = if settings.contains("rate_limit:") { "" } else { "rate_limit:\n  requests_per_minute: 0\n" };
        let text = format!("port: 0\nreload_interval_ms: 0\nredis:\n  visibility_timeout_ms: 2000\n{rate_limit}{settings}");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn replica(&self, config: &Path, store: &str, redis: &str) -> ServeProcess {
        replica(&self.registry, config, store, redis)
    }
}

fn add_key(registry: &Path, name: &str) -> String {
    let keys = registry.join("keys.json");
    let output = Command::new(env!("CARGO_BIN_EXE_caption")).args(["serve", "keys", "add", name, "--keys"]).arg(&keys).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A replica: `caption serve` on the deployment's registry and the given stores.
fn replica(registry: &Path, config: &Path, store: &str, redis: &str) -> ServeProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_caption"));
    command.args(["serve", "--registry"]).arg(registry).arg("--config").arg(config).args(["--store", store, "--redis", redis]);
    ServeProcess::start(command)
}

fn image_body(colour: [u8; 3]) -> serde_json::Value {
    json!({"image": common::base64(&common::png(40, 30, colour))})
}

/// Submits a job; returns its id.
fn submit_job(address: SocketAddr, key: &str, colour: [u8; 3]) -> String {
    let reply = common::post_json(address, "/api/v1/jobs", Some(key), &image_body(colour));
    assert_eq!(reply.status, 202, "{}", reply.text());
    reply.json()["job"]["id"].as_str().unwrap().to_string()
}

fn job(address: SocketAddr, key: &str, id: &str) -> serde_json::Value {
    let reply = common::get(address, &format!("/api/v1/jobs/{id}"), &[("X-API-Key", key)]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["job"].clone()
}

/// Polls until `done` holds, or panics with what `describe` says after `limit`.
fn wait_for(limit: Duration, describe: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {}", describe());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_jobs(address: SocketAddr, key: &str, ids: &[String], state: &str, limit: Duration) {
    wait_for(
        limit,
        || format!("jobs {:?}", ids.iter().map(|id| job(address, key, id)["state"].clone()).collect::<Vec<_>>()),
        || ids.iter().all(|id| job(address, key, id)["state"] == state),
    );
}

#[test]
#[cfg_attr(not(local_servers), ignore = "needs redis-server, PostgreSQL and nginx (installed by .ci/run)")]
fn replicas_share_jobs_results_and_feedback_behind_nginx() {
    let deployment = Deployment::new();
    let servers = tempfile::tempdir().unwrap();
    let postgres = PostgresServer::start(&servers.path().join("postgres"));
    let redis = RedisServer::start(&servers.path().join("redis"));
    let config = deployment.config("replica", "rate_limit:\n  requests_per_minute: 0\n  client_address_header: x-real-ip\n");
    let a = deployment.replica(&config, &postgres.url(), &redis.url());
    let b = deployment.replica(&config, &postgres.url(), &redis.url());
    let key = deployment.key.as_str();

    // A job submitted to A is read (and finished by either) through B.
    let id = submit_job(a.address, key, [10, 200, 30]);
    wait_for_jobs(b.address, key, std::slice::from_ref(&id), "succeeded", Duration::from_secs(30));
    assert!(job(b.address, key, &id)["captions"][0]["text"].is_string());

    // An image captioned through A is a cache hit on B.
    let body = image_body([200, 40, 40]);
    let first = common::post_json(a.address, "/api/v1/caption", Some(key), &body);
    assert_eq!((first.status, first.json()["cached"].clone()), (200, json!(false)), "{}", first.text());
    let second = common::post_json(b.address, "/api/v1/caption", Some(key), &body);
    assert_eq!((second.status, second.json()["cached"].clone()), (200, json!(true)), "{}", second.text());
    assert_eq!(first.json()["captions"], second.json()["captions"]);
    // Another key does not see it (results belong to the key that asked).
    let other = add_key(&deployment.registry, "other");
    std::thread::sleep(Duration::from_millis(1200));
    let third = common::post_json(b.address, "/api/v1/caption", Some(&other), &body);
    assert_eq!((third.status, third.json()["cached"].clone()), (200, json!(false)), "{}", third.text());

    // Feedback through B on A's answer, exported once from the shared database.
    let request_id = first.json()["request_id"].as_str().unwrap().to_string();
    let feedback = json!({"request_id": request_id, "rating": 2, "correction": "a red square"});
    let posted = common::post_json(b.address, "/api/v1/feedback", Some(key), &feedback);
    assert_eq!(posted.status, 201, "{}", posted.text());
    let out = deployment.dir.path().join("export");
    let export = Command::new(env!("CARGO_BIN_EXE_caption"))
        .args(["data", "export-feedback", "--store", &postgres.url(), "--out"])
        .arg(&out)
        .args(["--val-fraction", "0"])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let train: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("captions_train.json")).unwrap()).unwrap();
    let captions: Vec<&str> = train["annotations"].as_array().unwrap().iter().map(|a| a["caption"].as_str().unwrap()).collect();
    assert_eq!(captions, ["a red square"]);
    assert_eq!(train["images"].as_array().unwrap().len(), 1);

    // Through nginx (deploy/nginx.conf): both replicas answer, a body over its limit stops there,
    // and a replica that dies is skipped.
    let port = free_port();
    let gateway_dir = servers.path().join("nginx");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    let _nginx = Nginx::start(&gateway_dir, &nginx_config(&[a.address, b.address], port), port);
    let gateway: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(common::get(gateway, "/ready", &[]).status, 200);
    for colour in [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]] {
        let reply = common::post_json(gateway, "/api/v1/caption", Some(key), &image_body(colour));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let oversized = vec![b'x'; 11 * 1024 * 1024];
    let refused = common::send(gateway, "POST", "/api/v1/caption", &[("Content-Type", "application/json"), ("X-API-Key", key)], &oversized);
    assert_eq!(refused.status, 413);
    let mut a = a;
    a.kill();
    for colour in [[13, 14, 15], [16, 17, 18], [19, 20, 21]] {
        let reply = common::post_json(gateway, "/api/v1/caption", Some(key), &image_body(colour));
        assert_eq!(reply.status, 200, "{}\n{}", reply.text(), b.log());
    }
    // The job read back through the gateway, after its replica is gone.
    assert_eq!(job(gateway, key, &id)["state"], "succeeded");
}

#[test]
#[cfg_attr(not(local_servers), ignore = "needs redis-server, PostgreSQL and nginx (installed by .ci/run)")]
fn jobs_claimed_by_a_killed_replica_are_finished_by_another() {
    let deployment = Deployment::new();
    let servers = tempfile::tempdir().unwrap();
    let postgres = PostgresServer::start(&servers.path().join("postgres"));
    let redis = RedisServer::start(&servers.path().join("redis"));
    let key = deployment.key.as_str();
    // A waits 20 s for each batch to fill: its jobs are claimed, not finished, when it dies.
    let slow = deployment.config("slow", "batching:\n  max_batch: 8\n  max_wait_ms: 20000\njobs:\n  concurrency: 4\n");
    let mut a = deployment.replica(&slow, &postgres.url(), &redis.url());
    let ids: Vec<String> = [[1, 1, 1], [2, 2, 2], [3, 3, 3]].into_iter().map(|c| submit_job(a.address, key, c)).collect();
    wait_for_jobs(a.address, key, &ids, "running", Duration::from_secs(20));
    a.kill();

    let normal = deployment.config("normal", "");
    let b = deployment.replica(&normal, &postgres.url(), &redis.url());
    // B takes them over once A's claims lapse (visibility timeout 2 s).
    wait_for_jobs(b.address, key, &ids, "succeeded", Duration::from_secs(30));
    for id in &ids {
        assert!(job(b.address, key, id)["captions"][0]["text"].is_string());
    }
}

#[test]
#[cfg_attr(not(local_servers), ignore = "needs redis-server, PostgreSQL and nginx (installed by .ci/run)")]
fn the_rate_limit_holds_across_replicas() {
    let deployment = Deployment::new();
    let servers = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&servers.path().join("redis"));
    let config = deployment.config("limited", "rate_limit:\n  requests_per_minute: 60\n  burst: 5\n");
    // The limit lives in Redis alone: each replica keeps its own database file here.
    let store = |name: &str| deployment.dir.path().join(name).to_str().unwrap().to_string();
    let a = deployment.replica(&config, &store("a.sqlite3"), &redis.url());
    let b = deployment.replica(&config, &store("b.sqlite3"), &redis.url());
    let started = Instant::now();
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            let address = if i % 2 == 0 { a.address } else { b.address };
            common::get(address, "/api/v1/models", &[("X-API-Key", &deployment.key)]).status
        })
        .collect();
    // One bucket of 5, refilled at one a second: each replica alone would have allowed 5 more.
    let refilled = started.elapsed().as_secs() as usize + 1;
    let allowed = statuses.iter().filter(|&&s| s == 200).count();
    assert!((5..=5 + refilled).contains(&allowed), "{statuses:?}");
    assert_eq!(allowed + statuses.iter().filter(|&&s| s == 429).count(), 12, "{statuses:?}");
}

#[test]
#[cfg_attr(not(local_servers), ignore = "needs redis-server, PostgreSQL and nginx (installed by .ci/run)")]
fn store_outages_answer_503_lose_no_accepted_job_and_heal() {
    let deployment = Deployment::new();
    let servers = tempfile::tempdir().unwrap();
    let postgres = PostgresServer::start(&servers.path().join("postgres"));
    let mut redis = RedisServer::start(&servers.path().join("redis"));
    let key = deployment.key.as_str();
    // One job at a time, each waiting 1.5 s for company: most accepted jobs are still in Redis's
    // stream when Redis stops.
    let config = deployment.config("replica", "batching:\n  max_wait_ms: 1500\njobs:\n  concurrency: 1\n");
    let a = deployment.replica(&config, &postgres.url(), &redis.url());
    let ids: Vec<String> = [[9, 0, 0], [0, 9, 0], [0, 0, 9], [9, 9, 0]].into_iter().map(|c| submit_job(a.address, key, c)).collect();

    redis.stop();
    let ready = common::get(a.address, "/ready", &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("Redis"), "{}", ready.text());
    let refused = common::post_json(a.address, "/api/v1/jobs", Some(key), &image_body([5, 5, 5]));
    assert_eq!(refused.status, 503, "{}", refused.text());
    redis.restart();
    wait_for(Duration::from_secs(20), || a.log(), || common::get(a.address, "/ready", &[]).status == 200);
    wait_for_jobs(a.address, key, &ids, "succeeded", Duration::from_secs(40));

    postgres.stop();
    let ready = common::get(a.address, "/ready", &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let refused = common::post_json(a.address, "/api/v1/jobs", Some(key), &image_body([6, 6, 6]));
    assert_eq!(refused.status, 503, "{}", refused.text());
    postgres.restart();
    wait_for(Duration::from_secs(20), || a.log(), || common::get(a.address, "/ready", &[]).status == 200);
    let id = submit_job(a.address, key, [7, 7, 7]);
    wait_for_jobs(a.address, key, std::slice::from_ref(&id), "succeeded", Duration::from_secs(20));
}
