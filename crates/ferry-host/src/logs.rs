//! Instance output: the log files the processes write to directly, their rotation, and the
//! lines Ferry reads back from them.
//!
//! # How lines are captured
//! An instance's standard output and error are appended by the process itself to `stdout.log`
//! and `stderr.log` in its directory (files, not pipes, so output keeps flowing while Ferry
//! restarts). Per instance, one task reads what was appended every `log_poll`, splits it into
//! lines, stamps each line with **the time Ferry read it** (`LogLine::time`), keeps the most
//! recent [`RING_LINES`] (at most 2 MiB of text) in memory for [`crate::HostProvider`]'s `logs`
//! (so `logs` returns at most that many lines per instance), and sends each one to
//! the server group's followers (`follow_logs`). A new instance's output is read whole, however
//! much the process wrote before the task first looked (from where the files ended before it
//! started: a directory reused after a resize may hold an earlier instance's). When the task starts for
//! an instance found after a Ferry restart (re-adopted, or started again), the end of the
//! existing files is read back with **the file's modification time** as the time of every line,
//! since when they were written is not known any more.
//!
//! # Retention and rotation
//! Each of the two files may hold half of `log_retention_bytes`. When one is over, it is cut to
//! its newest half (at a line boundary) in place ("copy-truncate"): the newest part is read,
//! the file is truncated and the part appended again. The process writes with `O_APPEND`, so its
//! next write lands at the new end and it never notices. A line it writes while the kept part is
//! being put back ends up before that part in the file (it is still read and sent, in order);
//! only a line written in the instant between Ferry's last read and the truncation is lost. Lines
//! Ferry notes itself (a failed start, an exit, a restart) go to `stderr.log`, prefixed with
//! `ferry:`.

use crate::process::{STDERR_LOG, STDOUT_LOG};
use ferry_provider::LogLine;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Lines kept in memory per instance for `logs`.
pub(crate) const RING_LINES: usize = 5000;
/// Bytes of line text kept in memory per instance (the older lines go first).
const RING_BYTES: usize = 2 * 1024 * 1024;
/// Bytes read back from the end of each file when the reader starts.
const RELOAD_BYTES: u64 = 512 * 1024;
/// Longest line; a longer one is cut into pieces of this size.
const MAX_LINE: usize = 64 * 1024;
/// Most bytes read from one file in one look (more waits for the next look).
const MAX_READ: u64 = 4 * 1024 * 1024;

/// The most recent lines of one instance.
#[derive(Debug, Default)]
pub(crate) struct LogRing {
    lines: VecDeque<LogLine>,
    /// Bytes of text in `lines`.
    bytes: usize,
}

impl LogRing {
    fn push(&mut self, line: LogLine) {
        self.bytes += line.line.len();
        self.lines.push_back(line);
        while self.lines.len() > RING_LINES || (self.bytes > RING_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.line.len();
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

/// Reading one log file.
#[derive(Debug)]
struct FileTail {
    path: PathBuf,
    stream: &'static str,
    /// Bytes of the file already read.
    offset: u64,
    /// An incomplete last line.
    partial: Vec<u8>,
    /// Size above which the file is cut to its newest half.
    limit: u64,
}

impl FileTail {
    fn new(dir: &Path, name: &str, stream: &'static str, limit: u64) -> FileTail {
        FileTail {
            path: dir.join(name),
            stream,
            offset: 0,
            partial: Vec::new(),
            limit: limit.max(2),
        }
    }

    /// Reads back the end of the existing file (rotating it first if it grew too large while
    /// nobody read it). Returns its lines and the file's modification time.
    fn reload(&mut self) -> std::io::Result<(Vec<String>, i64)> {
        let Some(meta) = metadata(&self.path)? else {
            return Ok((Vec::new(), 0));
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if meta.len() > self.limit {
            rotate(&self.path, self.limit)?;
        }
        let mut file = std::fs::File::open(&self.path)?;
        let len = file.metadata()?.len();
        let from = len.saturating_sub(RELOAD_BYTES);
        file.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        (&mut file).take(len - from).read_to_end(&mut bytes)?;
        self.offset = from + bytes.len() as u64;
        if from > 0 {
            // Started mid-line: drop the fragment.
            let cut = bytes.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
            bytes.drain(..cut);
        }
        Ok((self.split(&bytes), mtime))
    }

    /// Reads what was appended since the last look and returns the complete lines; cuts the
    /// file when it is over its limit.
    fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let Some(meta) = metadata(&self.path)? else {
            return Ok(Vec::new());
        };
        let len = meta.len();
        if len < self.offset {
            // Cut by someone else: start over.
            self.offset = 0;
            self.partial.clear();
        }
        let mut lines = Vec::new();
        if len > self.offset {
            let mut file = std::fs::File::open(&self.path)?;
            file.seek(SeekFrom::Start(self.offset))?;
            let mut bytes = Vec::new();
            file.take((len - self.offset).min(MAX_READ))
                .read_to_end(&mut bytes)?;
            self.offset += bytes.len() as u64;
            lines = self.split(&bytes);
        }
        if self.offset > self.limit && self.offset >= len {
            lines.extend(self.cut()?);
        }
        Ok(lines)
    }

    /// Cuts the file to the newest half of its limit while its writer may keep appending, and
    /// returns the lines appended meanwhile: those written before the cut are read first, those
    /// written between the truncation and the re-append of the kept part (they land before it)
    /// are read from the start of the cut file. Only a line written in the instant between the
    /// last read and the truncation is lost.
    fn cut(&mut self) -> std::io::Result<Vec<String>> {
        let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        // Catch up with the end of the file.
        file.seek(SeekFrom::Start(self.offset))?;
        let mut late = Vec::new();
        file.read_to_end(&mut late)?;
        self.offset += late.len() as u64;
        let mut lines = self.split(&late);
        let keep = (self.limit / 2).min(self.offset);
        file.seek(SeekFrom::Start(self.offset - keep))?;
        let mut kept = Vec::with_capacity(keep as usize);
        (&mut file).take(keep).read_to_end(&mut kept)?;
        if let Some(i) = kept.iter().position(|b| *b == b'\n') {
            kept.drain(..=i);
        }
        file.set_len(0)?;
        drop(file);
        let mut append = OpenOptions::new().append(true).open(&self.path)?;
        append.write_all(&kept)?;
        let len = append.metadata()?.len();
        drop(append);
        // Whatever the writer appended between the truncation and our write is before `kept`.
        let between = len.saturating_sub(kept.len() as u64);
        if between > 0 {
            let mut file = std::fs::File::open(&self.path)?;
            let mut bytes = Vec::new();
            (&mut file).take(between).read_to_end(&mut bytes)?;
            lines.extend(self.split(&bytes));
        }
        self.offset = len;
        Ok(lines)
    }

    /// Appends `bytes` to the pending partial line and returns the complete lines.
    fn split(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                lines.push(text(&self.partial));
                self.partial.clear();
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    lines.push(text(&self.partial));
                    self.partial.clear();
                }
            }
        }
        lines
    }
}

fn text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

fn metadata(path: &Path) -> std::io::Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Cuts the file at `path` to its newest half of `limit` (from a line start) when it is larger
/// than `limit` (used when nobody was reading it); returns the new length when it did.
pub(crate) fn rotate(path: &Path, limit: u64) -> std::io::Result<Option<u64>> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len <= limit {
        return Ok(None);
    }
    let keep = limit / 2;
    file.seek(SeekFrom::Start(len - keep))?;
    let mut kept = Vec::with_capacity(keep as usize);
    (&mut file).take(keep).read_to_end(&mut kept)?;
    if let Some(i) = kept.iter().position(|b| *b == b'\n') {
        kept.drain(..=i);
    }
    file.set_len(0)?;
    drop(file);
    let mut append = OpenOptions::new().append(true).open(path)?;
    append.write_all(&kept)?;
    Ok(Some(append.metadata()?.len()))
}

/// Appends a note of Ferry's (`ferry: …`) to the instance's `stderr.log`.
pub(crate) async fn note(dir: &Path, message: &str) {
    use tokio::io::AsyncWriteExt;
    let line = format!("ferry: {message}\n");
    let opened = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(STDERR_LOG))
        .await;
    if let Ok(mut f) = opened {
        let _ = f.write_all(line.as_bytes()).await;
    }
}

/// What a log reader needs.
pub(crate) struct TailSpec {
    /// Instance id (`LogLine::instance`).
    pub instance: String,
    /// The instance's directory.
    pub dir: PathBuf,
    /// Bytes retained per instance (half per file).
    pub retention: u64,
    /// Time between looks.
    pub poll: Duration,
    /// For a new instance, where its files ended before its process started (see
    /// [`lengths`]): everything after is its own output, read like any later output, so a fast
    /// first burst is not cut to its tail as the files of an instance found after a restart are.
    /// `None`: an instance found after a restart; the end of its files is read back.
    pub fresh_from: Option<[u64; 2]>,
}

/// The current lengths of an instance's stdout and stderr files (0 for a missing one). Whatever
/// is there belongs to an earlier instance that had the same directory.
pub(crate) fn lengths(dir: &Path) -> [u64; 2] {
    [STDOUT_LOG, STDERR_LOG].map(|name| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len()))
}

/// Reads the instance's log files until `cancel`, then reads them one last time.
pub(crate) async fn run_tail(
    spec: TailSpec,
    ring: Arc<Mutex<LogRing>>,
    followers: broadcast::Sender<LogLine>,
    cancel: CancellationToken,
) {
    let per_file = spec.retention / 2;
    let mut files = vec![
        FileTail::new(&spec.dir, STDOUT_LOG, "stdout", per_file),
        FileTail::new(&spec.dir, STDERR_LOG, "stderr", per_file),
    ];
    if let Some(from) = spec.fresh_from {
        for (file, from) in files.iter_mut().zip(from) {
            file.offset = from;
        }
    }
    let fresh = spec.fresh_from.is_some();
    let reloaded = tokio::task::spawn_blocking(move || {
        let lines: Vec<(&'static str, Vec<String>, i64)> = files
            .iter_mut()
            .filter(|_| !fresh)
            .filter_map(|f| match f.reload() {
                Ok((lines, time)) => Some((f.stream, lines, time)),
                Err(e) => {
                    tracing::warn!(file = %f.path.display(), "cannot read log file: {e}");
                    None
                }
            })
            .collect();
        (files, lines)
    })
    .await;
    let Ok((mut files, reloaded)) = reloaded else {
        return;
    };
    {
        let mut old: Vec<LogLine> = reloaded
            .into_iter()
            .flat_map(|(stream, lines, time)| {
                let instance = spec.instance.clone();
                lines.into_iter().map(move |line| LogLine {
                    instance: instance.clone(),
                    stream: stream.into(),
                    time,
                    line,
                })
            })
            .collect();
        old.sort_by_key(|l| l.time);
        let mut ring = ring.lock();
        for line in old {
            ring.push(line);
        }
    }
    loop {
        let last = tokio::select! {
            () = cancel.cancelled() => true,
            () = tokio::time::sleep(spec.poll) => false,
        };
        let polled = tokio::task::spawn_blocking(move || {
            let lines: Vec<(&'static str, Vec<String>)> = files
                .iter_mut()
                .map(|f| {
                    let lines = f.poll().unwrap_or_else(|e| {
                        tracing::debug!(file = %f.path.display(), "cannot read log file: {e}");
                        Vec::new()
                    });
                    (f.stream, lines)
                })
                .collect();
            (files, lines)
        })
        .await;
        let Ok((back, new)) = polled else { return };
        files = back;
        let time = ferry_core::now_millis();
        for (stream, lines) in new {
            for line in lines {
                let line = LogLine {
                    instance: spec.instance.clone(),
                    stream: stream.into(),
                    time,
                    line,
                };
                ring.lock().push(line.clone());
                let _ = followers.send(line);
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_half_from_a_line_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let text: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        std::fs::write(&path, &text).unwrap(); // 900 bytes
        assert_eq!(rotate(&path, 1000).unwrap(), None);
        let new_len = rotate(&path, 400).unwrap().unwrap();
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept.len() as u64, new_len);
        assert!(kept.len() <= 200, "{}", kept.len());
        assert!(kept.starts_with("line "), "{kept}");
        assert!(kept.ends_with("line 099\n"));
    }

    #[test]
    fn appended_lines_are_read_once_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let mut tail = FileTail::new(dir.path(), "stdout.log", "stdout", 1 << 20);
        assert!(tail.poll().unwrap().is_empty());
        let path = dir.path().join("stdout.log");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"one\r\ntwo\nthr").unwrap();
        assert_eq!(tail.poll().unwrap(), vec!["one", "two"]);
        f.write_all(b"ee\n").unwrap();
        assert_eq!(tail.poll().unwrap(), vec!["three"]);
        assert!(tail.poll().unwrap().is_empty());
    }

    #[test]
    fn a_file_over_its_limit_is_cut_while_the_writer_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut tail = FileTail::new(dir.path(), "stdout.log", "stdout", 1000);
        let mut seen = Vec::new();
        for i in 0..300 {
            writeln!(writer, "line {i:04}").unwrap();
            if i % 10 == 0 {
                seen.extend(tail.poll().unwrap());
            }
        }
        seen.extend(tail.poll().unwrap());
        assert_eq!(seen.len(), 300);
        assert_eq!(seen[299], "line 0299");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len <= 1000, "{len}");
        let content = std::fs::read_to_string(&path).unwrap();
        assert!(content.ends_with("line 0299\n"));
        assert!(content.starts_with("line "));
        // The writer's next line lands at the end of the cut file.
        writeln!(writer, "after").unwrap();
        assert_eq!(tail.poll().unwrap(), vec!["after"]);
    }

    #[test]
    fn the_ring_keeps_the_newest_lines() {
        let mut ring = LogRing::default();
        for n in 0..RING_LINES + 10 {
            ring.push(LogLine {
                instance: "i".into(),
                stream: "stdout".into(),
                time: n as i64,
                line: n.to_string(),
            });
        }
        assert_eq!(ring.lines.len(), RING_LINES);
        let tail = ring.tail(2);
        assert_eq!(tail[1].line, (RING_LINES + 9).to_string());
        let big = "x".repeat(RING_BYTES);
        for _ in 0..3 {
            ring.push(LogLine {
                instance: "i".into(),
                stream: "stdout".into(),
                time: 0,
                line: big.clone(),
            });
        }
        assert_eq!(ring.lines.len(), 1);
        assert_eq!(ring.bytes, RING_BYTES);
    }

    #[test]
    fn reload_reads_the_end_of_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stderr.log"), "a\nb\n").unwrap();
        let mut tail = FileTail::new(dir.path(), "stderr.log", "stderr", 1 << 20);
        let (lines, time) = tail.reload().unwrap();
        assert_eq!(lines, vec!["a", "b"]);
        assert!(time > 0);
        assert!(tail.poll().unwrap().is_empty());
    }

    /// Runs a reader over `dir` until it has read `want` lines or 5 s passed; returns the ring.
    async fn tail_until(dir: &Path, fresh_from: Option<[u64; 2]>, want: usize) -> Vec<LogLine> {
        let ring = Arc::new(Mutex::new(LogRing::default()));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_tail(
            TailSpec {
                instance: "i-0".into(),
                dir: dir.to_path_buf(),
                retention: 64 * 1024,
                poll: Duration::from_millis(20),
                fresh_from,
            },
            ring.clone(),
            broadcast::channel(16).0,
            cancel.clone(),
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ring.lock().lines.len() < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        task.await.unwrap();
        ring.lock().tail(usize::MAX)
    }

    /// About 300 KB of numbered lines, far over the 32 KiB a file may keep.
    fn burst(from: usize) -> String {
        (from..from + 6000)
            .map(|n| format!("new line {n:06} ..............................\n"))
            .collect()
    }

    #[tokio::test]
    async fn a_new_instances_first_burst_is_read_whole_and_old_output_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        // Left by an earlier instance with the same directory (an index reused after a resize).
        std::fs::write(dir.path().join(STDOUT_LOG), "old line\n").unwrap();
        let fresh_from = lengths(dir.path());
        assert_eq!(fresh_from, [9, 0]);
        // The process writes its burst before the reader first looks.
        let mut out = OpenOptions::new()
            .append(true)
            .open(dir.path().join(STDOUT_LOG))
            .unwrap();
        out.write_all(burst(0).as_bytes()).unwrap();
        let lines = tail_until(dir.path(), Some(fresh_from), RING_LINES).await;
        assert_eq!(
            lines.len(),
            RING_LINES,
            "the newest lines of the burst, all of them"
        );
        assert!(lines.iter().all(|l| l.line.starts_with("new line")));
        assert!(lines.last().unwrap().line.starts_with("new line 005999"));
        // And the file was cut to its retention as it was read.
        assert!(
            std::fs::metadata(dir.path().join(STDOUT_LOG))
                .unwrap()
                .len()
                <= 32 * 1024
        );

        // Found after a restart instead: only the end of the (cut) files is read back.
        let restarted = tempfile::tempdir().unwrap();
        std::fs::write(restarted.path().join(STDOUT_LOG), burst(0)).unwrap();
        let lines = tail_until(restarted.path(), None, 1).await;
        assert!(lines.len() < 1000, "{}", lines.len());
        assert!(lines.last().unwrap().line.starts_with("new line 005999"));
    }
}
