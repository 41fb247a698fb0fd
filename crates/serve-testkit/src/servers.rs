//! Real Redis, PostgreSQL and nginx servers for the scale-out tests, each started on a free
//! loopback port in a folder of the test's and stopped when dropped. They come from the
//! machine's packages (Debian's redis-server, postgresql and nginx, which `.ci/run` installs);
//! tests that need them are marked with `cfg(local_servers)` (see caption-test-support).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A program from PATH, or from where Debian puts PostgreSQL's and nginx's.
pub fn program(name: &str) -> PathBuf {
    caption_test_support::find_program(name).unwrap_or_else(|| panic!("{name} is not installed (see .ci/run)"))
}

/// Waits until `ready` holds, or panics with `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what} did not start within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server with its data in a folder; every write is on disk before it is acknowledged
/// (append-only file, fsync always), as deploy/compose.yaml runs it.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut server = RedisServer { port: free_port(), dir: dir.to_path_buf(), child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and data (after [`RedisServer::stop`]).
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        let child = Command::new(program("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until("redis-server", Duration::from_secs(20), || redis_answers(port));
    }

    /// Stops it as an operator would (SIGTERM: it writes its data and exits), and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 5];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG"
}

/// A PostgreSQL cluster of its own (initdb), trusting loopback connections. PostgreSQL refuses
/// to run as root: as root, it runs as the `postgres` user the Debian package creates.
pub struct PostgresServer {
    pub port: u16,
    data: PathBuf,
}

impl PostgresServer {
    pub fn start(dir: &Path) -> PostgresServer {
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).unwrap();
        if as_root() {
            // The cluster's folder must be the postgres user's, and reachable by it.
            open_to_others(dir);
            let (uid, gid) = (user_id(&["-u", "postgres"]), user_id(&["-g", "postgres"]));
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        }
        let server = PostgresServer { port: free_port(), data };
        let initdb = postgres_command(&program("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "--encoding=UTF8", "-D"])
            .arg(&server.data)
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        server.restart();
        server
    }

    /// Starts it again on the same port and data (after [`PostgresServer::stop`]).
    pub fn restart(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.data.display());
        let started = postgres_command(&program("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-o", &options])
            .output()
            .unwrap();
        assert!(started.status.success(), "PostgreSQL did not start: {}", String::from_utf8_lossy(&started.stderr));
    }

    /// Stops it as an operator would (fast shutdown: open connections are closed), and waits.
    pub fn stop(&self) {
        let stopped = postgres_command(&program("pg_ctl")).args(["stop", "-w", "-m", "fast", "-D"]).arg(&self.data).output().unwrap();
        assert!(stopped.status.success(), "PostgreSQL did not stop: {}", String::from_utf8_lossy(&stopped.stderr));
    }

    /// The `postgres` database as its superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = postgres_command(&program("pg_ctl")).args(["stop", "-m", "immediate", "-D"]).arg(&self.data).output();
    }
}

fn as_root() -> bool {
    user_id(&["-u"]) == 0
}

/// What `id ARGS` prints, as a number.
fn user_id(args: &[&str]) -> u32 {
    let output = Command::new("id").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or_else(|_| panic!("`id {}` failed", args.join(" ")))
}

/// Lets other users (the servers' own) reach `dir` (temporary folders are the owner's alone).
fn open_to_others(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A PostgreSQL program, run as the postgres user when this process is root.
fn postgres_command(program: &Path) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The repository's deploy/nginx.conf with `replicas` as its upstream servers, listening on
/// `127.0.0.1:port` instead of 8080; everything else as shipped.
pub fn nginx_config(replicas: &[std::net::SocketAddr], port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx.conf");
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (head, rest) = shipped.split_once("# replicas: one line each").expect("the replicas' marker in deploy/nginx.conf");
    let (_, tail) = rest.split_once("# end of replicas").expect("the end marker in deploy/nginx.conf");
    let servers: String = replicas.iter().map(|a| format!("\n        server {a} max_fails=2 fail_timeout=5s;")).collect();
    let config = format!("{head}# replicas{servers}\n        # end of replicas{tail}");
    assert!(config.contains("listen 8080;"), "deploy/nginx.conf listens on 8080");
    config.replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
}

/// nginx in the foreground with a configuration file of the test's.
pub struct Nginx {
    child: Child,
}

impl Nginx {
    pub fn start(dir: &Path, config: &str, port: u16) -> Nginx {
        let file = dir.join("nginx.conf");
        std::fs::write(&file, config).unwrap();
        // nginx's workers run as another user when it starts as root.
        open_to_others(dir);
        let globals = format!("daemon off; pid {};", dir.join("nginx.pid").display());
        let child = Command::new(program("nginx"))
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&file)
            .args(["-g", &globals])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child };
        wait_until("nginx", Duration::from_secs(20), || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                panic!("nginx exited ({status}):\n{log}");
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers too (SIGKILL would leave them listening).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A `caption serve` process (the command a test builds from the CLI's binary): started, its
/// address read from the line that says where it listens, its stderr collected until it exits.
pub struct ServeProcess {
    pub child: Child,
    pub address: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    pub fn start(mut command: Command) -> ServeProcess {
        use std::io::BufRead;
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let address = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                panic!("caption serve exited before listening:\n{log}");
            }
            log.push_str(&line);
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Drained, so that the server never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(log));
        let sink = log.clone();
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        ServeProcess { child, address, log, drain: Some(drain) }
    }

    /// What it has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: it stops at once, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit (after a signal); its status and whole log.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        (status, self.log())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
