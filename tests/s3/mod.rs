//! moto's S3 server on a free loopback port with a bucket `backups`, for the backup tests
//! (`pip install 'moto[server]'`); killed when the handle drops.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct S3 {
    child: Child,
    pub endpoint: String,
}

impl S3 {
    pub fn start() -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is needed for the S3 backup tests: pip install 'moto[server]'");
        let s3 = S3 {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let created = reqwest::blocking::Client::new()
            .put(format!("{}/backups", s3.endpoint))
            .send()
            .unwrap();
        assert!(created.status().is_success(), "create bucket: {created:?}");
        s3
    }

    /// The variables a process needs to reach this server (endpoint, credentials, region).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
