//! The locker server as a child process on a free loopback port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    child: Child,
    pub base: String,
}

/// Creates `user` in the store at `store` (the server must not be running) and returns its key.
pub fn add_user(
    bin: &Path,
    store: &Path,
    user: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(bin)
        .arg("--store")
        .arg(store)
        .args(["user", "add", user, "--json"])
        .output()?;
    if !out.status.success() {
        return Err(format!("user add {user}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["api_key"].as_str().ok_or("no api_key")?.to_owned())
}

impl Server {
    pub async fn start(
        bin: &Path,
        store: &Path,
        extra: &[String],
    ) -> Result<Server, Box<dyn std::error::Error>> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .arg("--store")
            .arg(store)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..1200 {
            if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await
                && r.status().is_success()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("the server did not come up".into())
    }

    /// CPU seconds (user + system) the server process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(&format!("/proc/{}/stat", self.child.id()))
    }

    /// SIGTERM, then wait: the store closes cleanly before the next round opens a new one.
    pub fn stop(mut self) -> std::io::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh directory under `work` for one round.
pub fn fresh(work: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = work.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Streams a file as a request body without reading it whole.
pub async fn file_body(path: &Path) -> std::io::Result<reqwest::Body> {
    let file = tokio::fs::File::open(path).await?;
    Ok(reqwest::Body::wrap_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 << 10),
    ))
}

/// The URL of `key` in the upload API (each path segment percent-encoded).
pub fn track_url(base: &str, key: &str) -> String {
    let mut url = reqwest::Url::parse(base).expect("a valid base URL");
    {
        let mut segments = url.path_segments_mut().expect("an http URL");
        segments.extend(["api", "v1", "tracks"]);
        segments.extend(key.split('/'));
    }
    url.to_string()
}

/// CPU seconds (user + system) of the process whose `/proc/.../stat` is `path` (0 when unknown).
pub fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) end with ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; clock ticks of
    // 1/100 s on Linux.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
