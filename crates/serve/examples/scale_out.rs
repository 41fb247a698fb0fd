//! Replicas on shared stores, measured on loopback: starts real PostgreSQL, Redis and nginx
//! (deploy/nginx.conf) servers from the machine's packages, and servers of this crate in this
//! process, then sends caption requests (`common::load`) to:
//!
//! - `embedded`: one server, SQLite file and in-process cache and limits (the default);
//! - `shared`: one server on PostgreSQL and Redis, directly;
//! - `nginx-1`, `nginx-2`: one, then two servers on PostgreSQL and Redis, through nginx.
//!
//! Each with distinct images (`miss`: every request is decoded, recorded and cached) and with one
//! image (`hit`: answered from the cache, so the stores' cost shows). One JSON line per run.
//!
//! cargo run --release -p caption-serve --example scale_out -- [--checkpoint DIR] [--requests 600] [--clients 8] [--seconds 60]
//!
//! Without `--checkpoint`, a tiny random-weight model (so that the stores' share shows).

use caption_serve_testkit as common;
use caption_serve_testkit::servers::{Nginx, PostgresServer, RedisServer, free_port, nginx_config};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use caption_serve::config::{AuthMode, RateLimitConfig};
use caption_serve::{ServeConfig, Server, ServerOptions};
use serde_json::json;

fn main() {
    caption_model::allocator::keep_freed_memory();
    let (mut requests, mut clients, mut seconds, mut checkpoint) = (600, 8, 60, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--checkpoint" => checkpoint = Some(PathBuf::from(&value)),
            "--requests" => requests = number() as usize,
            "--clients" => clients = number() as usize,
            "--seconds" => seconds = number(),
            other => panic!("unknown option {other}"),
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let registry = match &checkpoint {
        Some(checkpoint) => {
            let registry = dir.path().join("registry");
            caption_serve::registry::promote(&registry, checkpoint, None).expect("promoting the checkpoint");
            registry
        }
        None => common::registry_with_tiny_model(dir.path()),
    };
    let postgres = PostgresServer::start(&dir.path().join("postgres"));
    let redis = RedisServer::start(&dir.path().join("redis"));
    let embedded = config(None, None);
    let shared = config(Some(postgres.url()), Some(redis.url()));

    let run = |name: &str, address: SocketAddr| {
        for (mode, distinct) in [("miss", true), ("hit", false)] {
            // A different seed of colours per run: "miss" never meets an earlier run's results.
            let salt = name.len() as u8 * 37;
            let load = common::load::run(address, clients, requests, seconds, move |i| {
                let i = if distinct { i } else { 0 };
                common::png(64, 64, [(i % 251) as u8, (i / 251 % 251) as u8, salt])
            });
            println!(
                "{}",
                json!({
                    "setup": name, "mode": mode, "clients": clients, "succeeded": load.latencies.len(),
                    "refused_503": load.refused, "failed": load.failed, "seconds": load.seconds,
                    "requests_per_s": load.requests_per_second(), "p50_ms": load.percentile_ms(50.0), "p99_ms": load.percentile_ms(99.0),
                })
            );
        }
    };

    let server = start(&registry, &embedded);
    run("embedded", server.address());
    server.stop();
    let first = start(&registry, &shared);
    run("shared", first.address());
    let port = free_port();
    let gateway: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let nginx_dir = dir.path().join("nginx-1");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = Nginx::start(&nginx_dir, &nginx_config(&[first.address()], port), port);
    run("nginx-1", gateway);
    drop(nginx);
    let second = start(&registry, &shared);
    let nginx_dir = dir.path().join("nginx-2");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let _nginx = Nginx::start(&nginx_dir, &nginx_config(&[first.address(), second.address()], port), port);
    run("nginx-2", gateway);
}

fn config(store: Option<String>, redis: Option<String>) -> ServeConfig {
    let mut config = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        auth: AuthMode::Disabled,
        rate_limit: RateLimitConfig { requests_per_minute: 0, failed_keys_per_minute: 0, ..Default::default() },
        store_file: store.map(PathBuf::from),
        ..Default::default()
    };
    config.redis.url = redis;
    config
}

fn start(registry: &Path, config: &ServeConfig) -> Server {
    let server = Server::start(ServerOptions { registry: registry.to_path_buf(), config: config.clone() }).expect("starting a server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::get(server.address(), "/ready", &[]).status != 200 {
        assert!(Instant::now() < deadline, "the server never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}
