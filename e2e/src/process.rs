//! Running client programs (kubectl, Python) from tests: to completion under a deadline with
//! their output captured, or in the background with their output lines readable one at a time
//! under a deadline (for `kubectl get -w`, `kubectl wait`, `kubectl delete` that block).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// What a finished program did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// A printable rendering of a command line.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` to completion, feeding it `stdin`, and kills it when it is still running after
/// `deadline` (then the error carries what it printed so far).
pub fn run(mut cmd: Command, stdin: Option<&str>, deadline: Duration) -> Result<Output> {
    let command = describe(&cmd);
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{command}`"))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let text = text.to_string();
        // A separate thread: a large input must not deadlock against a full output pipe.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            bail!("`{command}` did not finish within {deadline:?}\n--- stdout\n{stdout}--- stderr\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().map_err(|_| anyhow!("reading the output of `{command}`"))?;
    let stderr = err.join().map_err(|_| anyhow!("reading the errors of `{command}`"))?;
    Ok(Output { command, status, stdout, stderr })
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A program running in the background whose output is read line by line. Dropping it kills
/// the program.
#[derive(Debug)]
pub struct Background {
    command: String,
    child: Child,
    lines: mpsc::Receiver<(Stream, String)>,
    /// Every line read so far, for messages.
    seen: Vec<(Stream, String)>,
}

impl Background {
    /// Starts `cmd` with its output piped.
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let command = describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{command}`"))?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        for (stream, reader) in
            [(Stream::Stdout, Box::new(out) as Box<dyn Read + Send>), (Stream::Stderr, Box::new(err))]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    if tx.send((stream, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self { command, child, lines, seen: Vec::new() })
    }

    /// Waits until a line of `stream` satisfies `pred` and returns it; fails when the program
    /// ends first or `deadline` passes.
    pub fn expect_line(&mut self, stream: Stream, deadline: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, line)) => {
                    self.seen.push((s, line.clone()));
                    if s == stream && pred(&line) {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "`{}`: no matching line on {stream:?} within {deadline:?}; output:\n{}",
                        self.command,
                        self.transcript()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "`{}` ended without a matching line on {stream:?}; output:\n{}",
                        self.command,
                        self.transcript()
                    )
                }
            }
        }
    }

    /// Whether the program is still running.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// Waits for the program to exit within `deadline`; returns its status and every line it
    /// printed (stdout and stderr interleaved as read).
    pub fn wait(mut self, deadline: Duration) -> Result<(ExitStatus, String)> {
        let until = Instant::now() + deadline;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= until {
                bail!("`{}` did not exit within {deadline:?}; output:\n{}", self.command, self.transcript());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF; collect what they still hold.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Ok((status, self.transcript()))
    }

    /// Every line read so far.
    pub fn transcript(&self) -> String {
        self.seen.iter().map(|(s, l)| format!("[{s:?}] {l}\n")).collect()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
