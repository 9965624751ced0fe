//! The on-disk state of one command, `<state-dir>/commands/<command_id>/`. The output file
//! is the spool: every line stays there until the dashboard acks it, so neither a dropped
//! link nor an agent restart loses a line.
//!
//! | file | written by | what |
//! |---|---|---|
//! | `spec.json` | agent, before the supervisor starts | id, kind, plan, state before |
//! | `lock`, `pid` | supervisor | flock held for the supervisor's life; its pid |
//! | `output` | supervisor | one JSON record per line: `{"seq","stream","line"}` |
//! | `result` | supervisor (agent if it died) | status, exit code, duration, last seq |
//! | `stop` | agent | exists = stop requested |
//! | `acked` | agent | the last seq the dashboard acked |
//! | `supervisor.log` | supervisor | its own diagnostics (stderr) |
//! | `awaiting` | supervisor | health gate: the seq of the line written after the activation |
//! | `reached` | agent | health gate: the dashboard acked that line (or a later one) |

use crate::plan::Plan;
use protocol::messages::AgentOutcome;
use protocol::{CommandKind, OutputStream};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const SPEC: &str = "spec.json";
pub const LOCK: &str = "lock";
pub const PID: &str = "pid";
pub const OUTPUT: &str = "output";
pub const RESULT: &str = "result";
pub const STOP: &str = "stop";
pub const ACKED: &str = "acked";
pub const SUPERVISOR_LOG: &str = "supervisor.log";
pub const AWAITING: &str = "awaiting";
pub const REACHED: &str = "reached";

/// The longest line sent in one record; longer lines become several records.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// A record's line once JSON-escaped stays under this, so an `output` frame never nears
/// the dashboard's 64 KiB limit (control characters escape to six bytes each).
const MAX_ESCAPED_BYTES: usize = 32 * 1024;

/// What the agent wrote down before starting a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub command_id: String,
    pub command: CommandKind,
    /// Unix milliseconds; orders the commands held on disk.
    pub created_ms: u64,
    #[serde(default)]
    pub generation_before: Option<String>,
    #[serde(default)]
    pub lock_before: Option<String>,
    /// None for commands the agent completes by itself (refresh, restart, refusals).
    #[serde(default)]
    pub plan: Option<Plan>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub stream: OutputStream,
    pub line: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub status: AgentOutcome,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The seq of the last record in `output` (0 for none).
    pub last_seq: u64,
    /// One sentence for the status checks: what failed, or how many tests passed.
    #[serde(default)]
    pub message: String,
    /// The structured result for `command_complete.result` (closure diff, generation,
    /// store path), kept here so it survives agent restarts like the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<protocol::CommandResult>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- small files

/// Writes a file atomically (temp + rename), so a reader never sees half of it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let text = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomic(path, &text)
}

/// None when the file does not exist; an error when it exists but cannot be used.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn read_result(dir: &Path) -> io::Result<Option<CommandResult>> {
    read_json(&dir.join(RESULT))
}

pub fn write_result(dir: &Path, result: &CommandResult) -> io::Result<()> {
    write_json(&dir.join(RESULT), result)
}

/// The last acked seq (0 when nothing was acked yet).
pub fn read_acked(dir: &Path) -> u64 {
    fs::read_to_string(dir.join(ACKED))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub fn write_acked(dir: &Path, seq: u64) -> io::Result<()> {
    // No fsync: losing the newest ack in a crash only means re-sending a few lines,
    // which the dashboard stores once anyway.
    let tmp = dir.join("acked.tmp");
    fs::write(&tmp, format!("{seq}\n"))?;
    fs::rename(tmp, dir.join(ACKED))
}

// ---------------------------------------------------------------- line splitting

/// Splits a line into record-sized pieces at character boundaries; an empty line stays
/// one empty record.
pub fn split_line(line: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut raw = 0;
    let mut escaped = 0;
    for (i, c) in line.char_indices() {
        let cost = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if raw + c.len_utf8() > MAX_LINE_BYTES || escaped + cost > MAX_ESCAPED_BYTES {
            pieces.push(&line[start..i]);
            start = i;
            raw = 0;
            escaped = 0;
        }
        raw += c.len_utf8();
        escaped += cost;
    }
    pieces.push(&line[start..]);
    pieces
}

/// Where to cut a too-long byte line so that a UTF-8 character is not split (backs up
/// over at most three continuation bytes; garbage is cut anywhere).
pub fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i > 0 && bytes[i] & 0xC0 != 0x80)
        .unwrap_or(max)
}

// ---------------------------------------------------------------- writing

/// Appends records to `output`, numbering them 1, 2, 3 … across both streams, and keeps
/// the file under the spool limit: past it, lines are counted instead of written, and
/// one marker record says how many were dropped.
pub struct SpoolWriter {
    out: BufWriter<File>,
    next_seq: u64,
    bytes: u64,
    limit: u64,
    dropped: u64,
}

impl SpoolWriter {
    /// A new, empty output file.
    pub fn create(path: &Path, limit: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Self::with_file(file, 1, 0, limit))
    }

    /// Continues an existing file whose last complete record has `last_seq`; a torn last
    /// line (its writer died mid-write) is cut off first.
    pub fn resume(path: &Path, limit: u64) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let (last_seq, end) = last_record_in(&mut file, len)?;
        file.set_len(end)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self::with_file(file, last_seq + 1, end, limit))
    }

    fn with_file(file: File, next_seq: u64, bytes: u64, limit: u64) -> Self {
        SpoolWriter {
            out: BufWriter::with_capacity(64 * 1024, file),
            next_seq,
            bytes,
            limit,
            dropped: 0,
        }
    }

    /// A line of the command's output, subject to the spool limit.
    pub fn line(&mut self, stream: OutputStream, line: &str) -> io::Result<()> {
        if self.dropped > 0 || self.bytes + line.len() as u64 > self.limit {
            // Once over, stay over: a gap with lines after it would hide where it was.
            self.dropped += 1;
            return Ok(());
        }
        self.write(stream, line)
    }

    /// A line of the agent's own (a step header, a failure note): always written.
    pub fn note(&mut self, stream: OutputStream, line: &str) -> io::Result<()> {
        self.write(stream, line)
    }

    fn write(&mut self, stream: OutputStream, line: &str) -> io::Result<()> {
        for piece in split_line(line) {
            let record = Record {
                seq: self.next_seq,
                stream,
                line: piece.to_owned(),
            };
            let mut json = serde_json::to_vec(&record).map_err(io::Error::other)?;
            json.push(b'\n');
            self.out.write_all(&json)?;
            self.bytes += json.len() as u64;
            self.next_seq += 1;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the drop marker if lines were dropped, and syncs the file. Returns the last
    /// seq written.
    pub fn finish(&mut self) -> io::Result<u64> {
        if self.dropped > 0 {
            let marker = format!(
                "[nixdeck-agent: {} lines dropped: output over the {} MiB spool limit]",
                self.dropped,
                self.limit.div_ceil(1024 * 1024)
            );
            self.dropped = 0;
            self.write(OutputStream::Stderr, &marker)?;
        }
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.last_seq())
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The seq of the last complete record of a file of `len` bytes, and where that record
/// ends (so a torn tail can be cut). Reads only the tail: a record is under 64 KiB.
fn last_record_in(file: &mut File, len: u64) -> io::Result<(u64, u64)> {
    let start = len.saturating_sub(256 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        return Ok((0, start));
    };
    let body = &tail[..end];
    let line_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let seq = serde_json::from_slice::<Record>(&body[line_start..])
        .map(|r| r.seq)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((seq, start + end as u64 + 1))
}

/// The seq of the last complete record in an output file; 0 when there is none.
pub fn last_seq(path: &Path) -> io::Result<u64> {
    match File::open(path) {
        Ok(mut file) => {
            let len = file.metadata()?.len();
            last_record_in(&mut file, len).map(|(seq, _)| seq)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- reading

/// Follows an output file that another process is still appending to: hands out each
/// complete record once, in order, and keeps a torn last line until its rest arrives.
pub struct SpoolReader {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
    /// The highest seq handed out or skipped; records up to it are not handed out.
    last_seq: u64,
}

impl SpoolReader {
    /// A reader that skips the records up to `skip_through` (acked before a restart).
    pub fn new(path: PathBuf, skip_through: u64) -> Self {
        SpoolReader {
            path,
            file: None,
            buf: Vec::new(),
            start: 0,
            last_seq: skip_through,
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Skips records up to `seq` from now on (the dashboard already has them).
    pub fn skip_through(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Appends up to `max` new records to `out`; returns how many.
    pub fn read(&mut self, max: usize, out: &mut VecDeque<Record>) -> io::Result<usize> {
        let mut count = 0;
        while count < max {
            if let Some(pos) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.start..self.start + pos];
                self.start += pos + 1;
                match serde_json::from_slice::<Record>(line) {
                    Ok(record) if record.seq <= self.last_seq => {}
                    Ok(record) => {
                        self.last_seq = record.seq;
                        out.push_back(record);
                        count += 1;
                    }
                    Err(err) => tracing::warn!(
                        path = %self.path.display(),
                        "skipping an unreadable output record: {err}"
                    ),
                }
                continue;
            }
            if !self.fill()? {
                break;
            }
        }
        Ok(count)
    }

    /// Reads more of the file; false at its current end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                // The supervisor has not created it yet.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        self.buf.drain(..self.start);
        self.start = 0;
        let mut chunk = [0u8; 64 * 1024];
        let n = file.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_split_at_char_boundaries() {
        assert_eq!(split_line(""), vec![""]);
        assert_eq!(split_line("short"), vec!["short"]);
        let long = "é".repeat(MAX_LINE_BYTES); // two bytes each
        let pieces = split_line(&long);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(pieces.concat(), long);
        // Control characters escape to six bytes: the escaped bound applies.
        let ctrl = "\u{1}".repeat(MAX_LINE_BYTES);
        for piece in split_line(&ctrl) {
            assert!(serde_json::to_string(piece).unwrap().len() <= MAX_ESCAPED_BYTES + 2);
        }
    }

    #[test]
    fn utf8_cut_keeps_characters_whole() {
        let bytes = "aé".repeat(10).into_bytes();
        for max in 1..bytes.len() {
            let cut = utf8_cut(&bytes, max);
            assert!(
                cut <= max && std::str::from_utf8(&bytes[..cut]).is_ok(),
                "{max}"
            );
        }
        assert_eq!(utf8_cut(b"abc", 10), 3);
    }

    #[test]
    fn writer_and_reader_round_trip_with_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTPUT);
        let mut w = SpoolWriter::create(&path, 1 << 20).unwrap();
        w.line(OutputStream::Stdout, "one").unwrap();
        w.line(OutputStream::Stderr, "two").unwrap();
        w.flush().unwrap();

        let mut reader = SpoolReader::new(path.clone(), 0);
        let mut got = VecDeque::new();
        assert_eq!(reader.read(10, &mut got).unwrap(), 2);
        // A half-written record is held back until its newline arrives.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"stream":"stdout","li"#).unwrap();
        assert_eq!(reader.read(10, &mut got).unwrap(), 0);
        f.write_all(b"ne\":\"three\"}\n{\"seq\":4,").unwrap();
        assert_eq!(reader.read(10, &mut got).unwrap(), 1);
        assert_eq!(got[2].line, "three");

        // The writer died mid-record: resuming cuts the torn tail and continues at 4.
        drop(w);
        assert_eq!(last_seq(&path).unwrap(), 3);
        let mut w = SpoolWriter::resume(&path, 1 << 20).unwrap();
        w.note(OutputStream::Stderr, "four").unwrap();
        assert_eq!(w.finish().unwrap(), 4);
        let mut fresh = SpoolReader::new(path, 2);
        let mut rest = VecDeque::new();
        fresh.read(10, &mut rest).unwrap();
        assert_eq!(
            rest.iter()
                .map(|r| (r.seq, r.line.as_str()))
                .collect::<Vec<_>>(),
            vec![(3, "three"), (4, "four")]
        );
    }

    #[test]
    fn the_limit_drops_lines_and_leaves_one_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTPUT);
        let mut w = SpoolWriter::create(&path, 200).unwrap();
        for i in 0..100 {
            w.line(OutputStream::Stdout, &format!("line {i}")).unwrap();
        }
        let last = w.finish().unwrap();
        let mut all = VecDeque::new();
        SpoolReader::new(path, 0).read(1000, &mut all).unwrap();
        assert_eq!(all.len() as u64, last);
        let marker = all.back().unwrap();
        assert_eq!(marker.stream, OutputStream::Stderr);
        let kept = all.len() as u64 - 1;
        assert_eq!(
            marker.line,
            format!(
                "[nixdeck-agent: {} lines dropped: output over the 1 MiB spool limit]",
                100 - kept
            )
        );
        assert!(all.iter().filter(|r| r.line.contains("dropped")).count() == 1);
    }
}
