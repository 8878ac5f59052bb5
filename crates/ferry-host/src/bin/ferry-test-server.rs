//! `ferry-test-server`: a tiny HTTP server used by the host provider's tests as an instance
//! program. It reads `PORT` (and `FERRY_INSTANCE`) from its environment, answers `GET /health`
//! with 200 (500 with `FAIL_HEALTH=1`) and any other path with `<instance> <path>`, and logs
//! each request line to stdout.
//!
//! Switches: `EXIT_AT_ONCE=1` exits with status 1 before listening; `CRASH_AFTER_MS=N` exits
//! with status 3 after N ms; `LOG_BYTES=N` writes about N bytes of numbered lines to stdout at
//! start; `STDERR_LINE=text` writes one line to stderr at start.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let instance = var("FERRY_INSTANCE").unwrap_or_else(|| "test-server".into());
    if var("EXIT_AT_ONCE").is_some() {
        eprintln!("{instance}: exiting at once as asked");
        std::process::exit(1);
    }
    let port: u16 = var("PORT").ok_or("PORT is not set")?.parse()?;
    let fail_health = var("FAIL_HEALTH").is_some();
    if let Some(ms) = var("CRASH_AFTER_MS") {
        let ms: u64 = ms.parse()?;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            eprintln!("crashing after {ms} ms as asked");
            std::process::exit(3);
        });
    }
    {
        let mut out = std::io::stdout().lock();
        if let Some(bytes) = var("LOG_BYTES") {
            let bytes: usize = bytes.parse()?;
            let mut written = 0;
            let mut n = 0u64;
            while written < bytes {
                let line = format!("noise line {n:08} ..............................\n");
                out.write_all(line.as_bytes())?;
                written += line.len();
                n += 1;
            }
        }
        if let Some(line) = var("STDERR_LINE") {
            eprintln!("{line}");
        }
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        writeln!(out, "{instance} listening on 127.0.0.1:{port}")?;
        out.flush()?;
        drop(out);
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let instance = instance.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &instance, fail_health);
            });
        }
    }
    Ok(())
}

fn serve(stream: TcpStream, instance: &str, fail_health: bool) -> Result<(), Error> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        // Read the headers; only `Connection: close` matters.
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
                break;
            }
            let header = header.to_ascii_lowercase();
            if header.starts_with("connection:") && header.contains("close") {
                close = true;
            }
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let (status, body) = if path == "/health" {
            if fail_health {
                (
                    "500 Internal Server Error",
                    "failing on purpose\n".to_string(),
                )
            } else {
                ("200 OK", "ok\n".to_string())
            }
        } else {
            println!("{instance} {}", request_line.trim_end());
            ("200 OK", format!("{instance} {path}\n"))
        };
        write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}
